//! Chapter 7's serving figure (SVG): time to first token and throughput against offered load.

use plotters::prelude::*;

/// One load generator run, as the serving figure plots it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPoint {
    /// Offered load, requests per second.
    pub rate: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub tokens_per_s: f64,
}

// ANCHOR: latency_throughput
/// The serving figure: for each stage, TTFT (p50 solid, p99 dashed) and output tokens/s against
/// the offered request rate.
pub fn latency_throughput_svg(series: &[(String, Vec<LoadPoint>)], title: &str, ttft_slo_ms: Option<f64>) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(30);
        top.titled(title, ("sans-serif", 14))?;
        let (left, right) = body.split_horizontally(500);
        let pts = || series.iter().flat_map(|(_, p)| p.iter());
        let x_max = pts().map(|p| p.rate).fold(0.0, f64::max).max(1e-3) * 1.05;
        let ttft_max = pts().map(|p| p.ttft_p99_ms).fold(ttft_slo_ms.unwrap_or(0.0), f64::max).max(1.0) * 1.1;
        let tps_max = pts().map(|p| p.tokens_per_s).fold(0.0, f64::max).max(1.0) * 1.1;
        let colours = [RGBColor(200, 60, 40), RGBColor(40, 110, 200), RGBColor(30, 150, 70), RGBColor(140, 80, 170)];
        let mut lat = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .caption("time to first token (solid p50, dashed p99, or max below 100 requests)", ("sans-serif", 14))
            .build_cartesian_2d(0.0..x_max, 0.0..ttft_max)?;
        lat.configure_mesh().x_desc("offered load, requests/s").y_desc("ms").draw()?;
        let mut thr = ChartBuilder::on(&right)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .caption("output throughput", ("sans-serif", 14))
            .build_cartesian_2d(0.0..x_max, 0.0..tps_max)?;
        thr.configure_mesh().x_desc("offered load, requests/s").y_desc("tokens/s").draw()?;
        for (i, (name, p)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            lat.draw_series(LineSeries::new(p.iter().map(|q| (q.rate, q.ttft_p50_ms)), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
            lat.draw_series(DashedLineSeries::new(p.iter().map(|q| (q.rate, q.ttft_p99_ms)), 6, 4, c.stroke_width(1)))?;
            lat.draw_series(p.iter().map(|q| Circle::new((q.rate, q.ttft_p50_ms), 3, c.filled())))?;
            thr.draw_series(LineSeries::new(p.iter().map(|q| (q.rate, q.tokens_per_s)), c.stroke_width(2)))?;
            thr.draw_series(p.iter().map(|q| Circle::new((q.rate, q.tokens_per_s), 3, c.filled())))?;
        }
        if let Some(slo) = ttft_slo_ms {
            // The latency objective a goodput count would use: points above it miss it.
            let grey = RGBColor(110, 110, 110);
            lat.draw_series(DashedLineSeries::new([(0.0, slo), (x_max, slo)], 3, 3, grey.stroke_width(1)))?
                .label(format!("TTFT objective {slo:.0} ms"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey.stroke_width(1)));
        }
        lat.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).draw()?;
        root.present()?;
    }
    Ok(svg)
}
// ANCHOR_END: latency_throughput
