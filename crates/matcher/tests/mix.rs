//! The exchange-core mix is what its documentation says it is: the shares of GTC, IOC, cancel
//! and replace commands in the stream (not only in the draws) match `docs/benchmarks.md` and
//! the module's documentation, to a tenth of a percentage point.

use ringmatch_matcher::workload::{exchange_core_mix, MixShape};

#[test]
fn the_mix_is_what_the_documentation_says() {
    // The benchmark's stream (seed 1), shortened: the shares settle within the first few
    // hundred thousand commands.
    let workload = exchange_core_mix(400_000, 1, MixShape::default());
    let mix = workload.mix();
    let shares = [
        ("GTC", mix.percent(mix.gtc), 14.1),
        ("IOC", mix.percent(mix.ioc), 3.0),
        ("cancel", mix.percent(mix.cancel), 5.7),
        ("replace", mix.percent(mix.replace), 77.2),
    ];
    for (name, measured, documented) in shares {
        assert!(
            (measured - documented).abs() <= 0.15,
            "{name}: {measured:.2}% in the stream, {documented}% documented ({mix})"
        );
    }
    assert_eq!(mix.other, 0, "{mix}");
    assert_eq!(mix.total(), 400_000);
    // The text the benchmark prints.
    assert!(mix.to_string().ends_with("% replace"), "{mix}");
    let documented = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md"),
    )
    .unwrap();
    assert!(
        documented.contains("14.1% GTC, 3.0% IOC, 5.7% cancel, 77.2% replace"),
        "docs/benchmarks.md states the mix as measured"
    );
}

/// The order-types stream holds every wave-2 order type, and they do what they are for:
/// stops trigger, orders expire, OCO legs cancel each other, icebergs show later slices. The
/// fast engine and the naive reference book agree on it, event for event.
#[test]
fn the_order_types_stream_uses_every_order_type_and_both_books_agree() {
    use ringmatch_matcher::workload::{mix_config, order_types_mix};
    use ringmatch_matcher::{Engine, NaiveBook};

    let workload = order_types_mix(60_000, 1, MixShape::default());
    let counts = workload.order_types;
    for (name, count) in [
        ("stops", counts.stops),
        ("OCOs", counts.ocos),
        ("icebergs", counts.icebergs),
        ("GTD limits", counts.gtd),
        ("triggered", counts.triggered),
        ("expired", counts.expired),
        ("OCO cancels", counts.oco_cancelled),
    ] {
        assert!(count >= 50, "{name}: {count} ({counts})");
    }
    // Most places are valid: the generator knows the last trade price.
    assert!(
        counts.rejected * 10 < counts.stops + counts.ocos,
        "{counts}"
    );
    // The plain mix's warm-up; the measured commands differ from the plain mix's.
    let plain = exchange_core_mix(60_000, 1, MixShape::default());
    assert_eq!(workload.warmup, plain.warmup);
    assert_ne!(workload.commands, plain.commands);

    let mut fast = Engine::new(mix_config()).unwrap();
    let mut naive = NaiveBook::new(mix_config()).unwrap();
    let (mut fast_events, mut naive_events) = (Vec::new(), Vec::new());
    for (index, command) in workload
        .warmup
        .iter()
        .chain(&workload.commands[..8_000])
        .enumerate()
    {
        fast_events.clear();
        naive_events.clear();
        fast.apply(index as u64 + 1, command, &mut fast_events);
        naive.apply(index as u64 + 1, command, &mut naive_events);
        assert_eq!(fast_events, naive_events, "command {}", index + 1);
    }
    assert_eq!(fast.state_hash(), naive.state_hash());
}
