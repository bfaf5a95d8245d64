//! Latency reports written to files: `.hgrm` percentile tables, HdrHistogram interval logs
//! (`.hlog`, V2 format) and SVG percentile plots, shared by every benchmark driver.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// The HdrHistogram percentile-distribution text format (`.hgrm`), in microseconds.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for step in histogram.iter_quantiles(5) {
        let quantile = step.quantile_iterated_to();
        let inverse = if quantile < 1.0 {
            1.0 / (1.0 - quantile)
        } else {
            f64::INFINITY
        };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:14.2}",
            step.value_iterated_to() as f64 / 1_000.0,
            quantile,
            step.count_since_last_iteration(),
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.mean() / 1_000.0,
        histogram.stdev() / 1_000.0,
        histogram.max() as f64 / 1_000.0,
        histogram.len()
    );
    out
}

/// One tagged interval of an HDR log: (tag, start after the log's start, length, histogram).
pub type Interval<'a> = (&'a str, Duration, Duration, &'a Histogram<u64>);

/// An HDR interval log (V2, compressed) of `intervals`, in order.
pub fn hdr_log(intervals: &[Interval<'_>]) -> anyhow::Result<Vec<u8>> {
    let mut log = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("ringmatch: latency from intended send time, nanoseconds")
        .with_start_time(std::time::SystemTime::now())
        .begin_log_with(&mut log, &mut serializer)?;
    for (tag, start, length, histogram) in intervals {
        writer
            .write_histogram(*histogram, *start, *length, Tag::new(tag))
            .map_err(|error| anyhow::anyhow!("writing the HDR log: {error:?}"))?;
    }
    drop(writer);
    Ok(log)
}

/// Writes `<name>.hgrm` (the whole run), `<name>.hlog` (one histogram per interval, or the
/// whole run as one when there are none) and `<name>.svg` for one latency histogram.
pub fn write_histogram_files(
    dir: &Path,
    name: &str,
    histogram: &Histogram<u64>,
    intervals: &[(Duration, Duration, Histogram<u64>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.hgrm")), hgrm(histogram))?;
    let tagged: Vec<Interval<'_>> = intervals
        .iter()
        .map(|(start, length, histogram)| (name, *start, *length, histogram))
        .collect();
    let log = hdr_log(&tagged)?;
    std::fs::write(dir.join(format!("{name}.hlog")), log)?;
    std::fs::write(
        dir.join(format!("{name}.svg")),
        svg_series(&[(name.to_string(), true, histogram)]),
    )?;
    Ok(())
}

/// A latency in microseconds as a short label in the unit that fits: ns, µs, ms or s.
pub fn duration_label(micros: f64) -> String {
    let (value, unit) = if micros >= 1e6 {
        (micros / 1e6, "s")
    } else if micros >= 1e3 {
        (micros / 1e3, "ms")
    } else if micros >= 1.0 {
        (micros, "µs")
    } else {
        (micros * 1e3, "ns")
    };
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

/// A percentile plot of labelled histograms (solid or dashed lines): x is the percentile on
/// a log scale of 1/(1-p) up to p99.999, y the latency on a log scale with its labels in the
/// unit that fits each decade; the legend is beside the plot, never over it.
pub fn svg_series(series: &[(String, bool, &Histogram<u64>)]) -> String {
    let nines_max = 5.0; // Up to p99.999.
    let mut lines = Vec::new();
    let mut value_max: f64 = 1.0;
    let mut value_min: f64 = f64::MAX;
    for (label, solid, histogram) in series {
        if histogram.is_empty() {
            continue;
        }
        let mut points = Vec::new();
        for step in 0..=200 {
            let nines = nines_max * step as f64 / 200.0;
            let quantile = 1.0 - 10f64.powf(-nines);
            let value = (histogram.value_at_quantile(quantile) as f64 / 1_000.0).max(0.01);
            value_max = value_max.max(value);
            value_min = value_min.min(value);
            points.push((nines, value));
        }
        lines.push((label.clone(), *solid, points));
    }
    // The plot area, with room on the left for the latency labels, below for the percentile
    // labels and the axis title, and on the right for the legend.
    let legend_width = 12.0
        + 7.5
            * lines
                .iter()
                .map(|(label, _, _)| label.chars().count())
                .max()
                .unwrap_or(0) as f64
        + 48.0;
    let (left, top, plot_width, plot_height) = (84.0, 48.0, 640.0, 400.0);
    let width = left + plot_width + 24.0 + legend_width;
    let height = top + plot_height + 64.0;
    let log_min = value_min.min(value_max).max(0.01).log10().floor();
    let log_max = value_max.log10().ceil().max(log_min + 1.0);
    let x = |nines: f64| left + plot_width * nines / nines_max;
    let y = |value: f64| {
        top + plot_height - plot_height * (value.log10() - log_min) / (log_max - log_min)
    };
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Latency by \
         percentile (from intended send time)</text>\n",
        left + plot_width / 2.0
    );
    for nines in 0..=nines_max as usize {
        let label = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"][nines];
        let px = x(nines as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            top + plot_height,
            top + plot_height + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">percentile</text>",
        left + plot_width / 2.0,
        top + plot_height + 42.0
    );
    for decade in log_min as i32..=log_max as i32 {
        let value = 10f64.powi(decade);
        let py = y(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_width,
            left - 8.0,
            py + 4.0,
            duration_label(value)
        );
    }
    for (index, (label, solid, points)) in lines.iter().enumerate() {
        let colour = colours[index % colours.len()];
        let dash = if *solid {
            ""
        } else {
            " stroke-dasharray=\"6 4\""
        };
        let path: Vec<String> = points
            .iter()
            .map(|(n, v)| format!("{:.1},{:.1}", x(*n), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        let legend_x = left + plot_width + 24.0;
        let legend_y = top + 8.0 + 18.0 * index as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{legend_x:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" \
             stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
            legend_x + 30.0,
            legend_x + 38.0,
            legend_y + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_switch_units() {
        assert_eq!(duration_label(0.1), "100 ns");
        assert_eq!(duration_label(1.0), "1 µs");
        assert_eq!(duration_label(250.0), "250 µs");
        assert_eq!(duration_label(1_000.0), "1 ms");
        assert_eq!(duration_label(12_500.0), "12.5 ms");
        assert_eq!(duration_label(3_000_000.0), "3 s");
    }

    #[test]
    fn the_legend_is_beside_the_plot_and_every_label_inside_the_image() {
        let mut fast = ringmatch_pipeline::new_histogram();
        let mut slow = ringmatch_pipeline::new_histogram();
        for value in 1..=10_000u64 {
            fast.record(value * 100).unwrap();
            slow.record(value * 1_000_000).unwrap();
        }
        let svg = svg_series(&[
            ("a pipeline with a long name".into(), true, &fast),
            ("slow".into(), false, &slow),
        ]);
        let number = |text: &str, key: &str| -> f64 {
            let start = text.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
            text[start..start + text[start..].find('"').unwrap()]
                .parse()
                .unwrap()
        };
        let width = number(&svg, "width");
        // Units switch: the plot spans 100 ns to 10 s.
        for label in ["100 ns", "1 µs", "1 ms", "1 s", "10 s"] {
            assert!(svg.contains(&format!(">{label}<")), "{label}: {svg}");
        }
        // Every polyline point is left of every legend line.
        let legend_x = svg
            .lines()
            .filter(|line| line.starts_with("<line") && line.contains("stroke-width=\"2\""))
            .map(|line| number(line, "x1"))
            .fold(f64::MAX, f64::min);
        for line in svg.lines().filter(|line| line.starts_with("<polyline")) {
            let points = &line[line.find("points=\"").unwrap() + 8..];
            for point in points.trim_end_matches("\"/>").split(' ') {
                let px: f64 = point.split(',').next().unwrap().parse().unwrap();
                assert!(px < legend_x, "{px} >= {legend_x}");
            }
        }
        // Right-aligned y labels end inside the image: their anchor is at least the label's
        // width from the left edge (about 7 px a character at 12 px).
        for line in svg
            .lines()
            .filter(|line| line.contains("text-anchor=\"end\""))
        {
            let text_start = line.rfind("\">").unwrap() + 2;
            let label = &line[text_start..line.rfind("</text>").unwrap()];
            let anchor = number(&line[line.find("<text").unwrap()..], "x");
            assert!(
                anchor >= 7.0 * label.chars().count() as f64,
                "{label} at {anchor}"
            );
        }
        assert!(legend_x + 38.0 + 7.5 * 27.0 <= width, "{width}");
    }
}
