//! The cold-start chart: the empirical distribution (ECDF) of each series'
//! cold starts on one logarithmic time axis, so that microseconds and tens
//! of milliseconds are both readable. Drawn with plotters' SVG backend,
//! which writes text as `<text>` elements and needs no font files.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::report::{Stats, fmt_us};

/// One series of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub label: String,
    /// Its samples (µs).
    pub stats: Stats,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x65, 0x4f, 0xf0),
    RGBColor(0xd9, 0x4f, 0x04),
    RGBColor(0x2a, 0x9d, 0x5c),
    RGBColor(0x55, 0x55, 0x55),
];

/// Renders the chart as an SVG document.
///
/// # Errors
/// When there is nothing to draw or plotters fails.
pub fn render(title: &str, series: &[Series]) -> anyhow::Result<String> {
    let all = series.iter().flat_map(|s| s.stats.samples.iter().copied());
    let (lo, hi) = all
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    anyhow::ensure!(lo.is_finite() && hi > 0.0, "no samples to chart");
    // Whole decades around the data.
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);

    let mut svg = String::new();
    {
        let legend_height = 24 * series.len() as u32 + 16;
        let root =
            SVGBackend::with_string(&mut svg, (960, 520 + legend_height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (plot, legend) = root.split_vertically(520);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("request sent → first response byte (log scale)")
            .y_desc("fraction of cold starts at or below")
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(draw_err)?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut sorted: Vec<f64> = s
                .stats
                .samples
                .iter()
                .copied()
                .filter(|v| v.is_finite() && *v > 0.0)
                .collect();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            let steps: Vec<(f64, f64)> = sorted
                .iter()
                .enumerate()
                .flat_map(|(k, &x)| [(x, k as f64 / n), (x, (k + 1) as f64 / n)])
                .collect();
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))
                .map_err(draw_err)?;
            chart
                .draw_series(
                    sorted
                        .iter()
                        .enumerate()
                        .map(|(k, &x)| Circle::new((x, (k + 1) as f64 / n), 3, color.filled())),
                )
                .map_err(draw_err)?;
            // The legend, below the plot, where it hides no sample.
            let y = 8 + 24 * i as i32;
            let label = format!(
                "{}: p50 {}, p90 {}, max {} (n = {})",
                s.label,
                fmt_us(s.stats.p50),
                fmt_us(s.stats.p90),
                fmt_us(s.stats.max),
                s.stats.n
            );
            legend
                .draw(&PathElement::new(
                    vec![(90, y + 8), (120, y + 8)],
                    color.stroke_width(3),
                ))
                .map_err(draw_err)?;
            legend
                .draw(&Text::new(label, (130, y), ("sans-serif", 15).into_font()))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Renders the chart into `path`.
///
/// # Errors
/// As [`render`], or when the file cannot be written.
pub fn write(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let svg = render(title, series)?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// An axis label: `100 µs`, `1 ms`, `2.5 ms`, `1 s`.
fn fmt_tick(v: f64) -> String {
    let (value, unit) = if v >= 1e6 {
        (v / 1e6, "s")
    } else if v >= 1e3 {
        (v / 1e3, "ms")
    } else {
        (v, "µs")
    };
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_two_labelled_distributions() {
        let svg = render(
            "cold starts",
            &[
                Series {
                    label: "wasm".into(),
                    stats: Stats::of_us(vec![350.0, 420.0, 610.0]).unwrap(),
                },
                Series {
                    label: "container".into(),
                    stats: Stats::of_us(vec![31_000.0, 35_000.0, 52_000.0]).unwrap(),
                },
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("wasm: p50 420 µs"), "legend names the series");
        assert!(svg.contains("container: p50 35.0 ms"));
        assert!(svg.contains("100 µs"), "axis ticks are short");
        assert!(svg.contains("log scale"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(fmt_tick(100.0), "100 µs");
        assert_eq!(fmt_tick(1_000.0), "1 ms");
        assert_eq!(fmt_tick(2_500.0), "2.5 ms");
        assert_eq!(fmt_tick(1_000_000.0), "1 s");
    }

    #[test]
    fn refuses_an_empty_chart() {
        assert!(render("x", &[]).is_err());
    }
}
