//! Chapter 5's chunked-prefill figure (SVG): the short requests' ITL p99 and the throughput against
//! the step's token budget, with the unchunked run as a reference line.

use crate::chunked::ChunkedReport;
use plotters::prelude::*;

// ANCHOR: budget_sweep
/// ITL p99 (left) and tokens/s (right) of the chunked runs against their token budget (log
/// scale); the run without chunking is the dashed line on both.
pub fn budget_sweep_svg(r: &ChunkedReport, title: &str) -> anyhow::Result<String> {
    let chunked: Vec<_> = r.rows.iter().filter(|row| row.chunked).collect();
    let whole = r.rows.iter().find(|row| !row.chunked);
    anyhow::ensure!(!chunked.is_empty(), "no chunked run to plot");
    let (lo, hi) = chunked.iter().fold((f64::MAX, 0.0f64), |(l, h), row| (l.min(row.budget as f64), h.max(row.budget as f64)));
    let all = || r.rows.iter();
    let itl_max = all().map(|row| row.itl_p99_ms).fold(0.0, f64::max).max(1.0) * 1.1;
    let tps_max = all().map(|row| row.tokens_per_s).fold(0.0, f64::max).max(1.0) * 1.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(30);
        top.titled(title, ("sans-serif", 14))?;
        let (left, right) = body.split_horizontally(500);
        let blue = RGBColor(40, 110, 200);
        let grey = RGBColor(120, 120, 120);
        let x = (lo / 1.3..hi * 1.3).log_scale();
        let mut itl = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .caption("ITL p99 of the decoding requests", ("sans-serif", 14))
            .build_cartesian_2d(x.clone(), 0.0..itl_max)?;
        itl.configure_mesh().x_desc("token budget per step (chunked)").y_desc("ms").draw()?;
        let mut thr = ChartBuilder::on(&right)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .caption("throughput", ("sans-serif", 14))
            .build_cartesian_2d(x, 0.0..tps_max)?;
        thr.configure_mesh().x_desc("token budget per step (chunked)").y_desc("tokens/s").draw()?;
        let pts = |f: fn(&crate::chunked::ChunkedRow) -> f64| chunked.iter().map(move |row| (row.budget as f64, f(row)));
        itl.draw_series(LineSeries::new(pts(|row| row.itl_p99_ms), blue.stroke_width(2)))?
            .label("chunked")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue.stroke_width(2)));
        itl.draw_series(pts(|row| row.itl_p99_ms).map(|p| Circle::new(p, 3, blue.filled())))?;
        thr.draw_series(LineSeries::new(pts(|row| row.tokens_per_s), blue.stroke_width(2)))?;
        thr.draw_series(pts(|row| row.tokens_per_s).map(|p| Circle::new(p, 3, blue.filled())))?;
        if let Some(w) = whole {
            let flat = |v: f64| [(lo / 1.3, v), (hi * 1.3, v)];
            itl.draw_series(DashedLineSeries::new(flat(w.itl_p99_ms), 6, 4, grey.stroke_width(2)))?
                .label("whole prompt in one step")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey.stroke_width(2)));
            thr.draw_series(DashedLineSeries::new(flat(w.tokens_per_s), 6, 4, grey.stroke_width(2)))?;
        }
        itl.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).draw()?;
        root.present()?;
    }
    Ok(svg)
}
// ANCHOR_END: budget_sweep
