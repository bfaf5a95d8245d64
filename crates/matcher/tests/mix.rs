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
