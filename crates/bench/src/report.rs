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

/// An HDR interval log (V2, compressed) holding each tagged histogram once.
pub fn hdr_log(histograms: &[(String, &Histogram<u64>, Duration)]) -> anyhow::Result<Vec<u8>> {
    let mut log = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("ringmatch: latency from intended send time, nanoseconds")
        .with_start_time(std::time::SystemTime::now())
        .begin_log_with(&mut log, &mut serializer)?;
    for (tag, histogram, elapsed) in histograms {
        writer
            .write_histogram(*histogram, Duration::ZERO, *elapsed, Tag::new(tag))
            .map_err(|error| anyhow::anyhow!("writing the HDR log: {error:?}"))?;
    }
    drop(writer);
    Ok(log)
}

/// Writes `<name>.hgrm`, `<name>.hlog` and `<name>.svg` for one latency histogram.
pub fn write_histogram_files(
    dir: &Path,
    name: &str,
    histogram: &Histogram<u64>,
    elapsed: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.hgrm")), hgrm(histogram))?;
    let log = hdr_log(&[(name.to_string(), histogram, elapsed)])?;
    std::fs::write(dir.join(format!("{name}.hlog")), log)?;
    std::fs::write(
        dir.join(format!("{name}.svg")),
        svg_series(&[(name.to_string(), true, histogram)]),
    )?;
    Ok(())
}

/// A percentile plot of labelled histograms (solid or dashed lines).
pub fn svg_series(series: &[(String, bool, &Histogram<u64>)]) -> String {
    let (width, height, margin) = (900.0, 520.0, 70.0);
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
            let value = (histogram.value_at_quantile(quantile) as f64 / 1_000.0).max(0.1);
            value_max = value_max.max(value);
            value_min = value_min.min(value);
            points.push((nines, value));
        }
        lines.push((label.clone(), *solid, points));
    }
    let log_min = value_min.min(value_max).max(0.1).log10().floor();
    let log_max = value_max.log10().ceil().max(log_min + 1.0);
    let x = |nines: f64| margin + (width - 2.0 * margin) * nines / nines_max;
    let y = |value: f64| {
        height - margin - (height - 2.0 * margin) * (value.log10() - log_min) / (log_max - log_min)
    };
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Latency by percentile (from intended send time)</text>\n",
        width / 2.0
    );
    for nines in 0..=nines_max as usize {
        let label = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"][nines];
        let px = x(nines as f64);
        let _ = writeln!(svg, "<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", margin, height - margin, height - margin + 18.0);
    }
    for decade in log_min as i32..=log_max as i32 {
        let value = 10f64.powi(decade);
        let py = y(value);
        let _ = writeln!(svg, "<line x1=\"{margin}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} us</text>", width - margin, margin - 6.0, py + 4.0, value);
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
        let legend_y = margin + 16.0 * index as f64;
        let _ = writeln!(svg, "<line x1=\"{}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{label}</text>", margin + 10.0, margin + 40.0, margin + 46.0, legend_y + 4.0);
    }
    svg.push_str("</svg>\n");
    svg
}
