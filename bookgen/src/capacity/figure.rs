//! The capacity report's figures: reserved and used KV memory over time of both designs (SVG).

use crate::capacity::result::{CapacityReport, CapacityRun};
use crate::units::{gib, human_bytes, GIB};
use anyhow::{Context, Result};
use std::path::Path;

/// Writes the KV-memory-over-time figures: `capacity-real.svg` (if the real run was made) and
/// `capacity-accounting.svg` into `dir`. Returns the paths written.
pub fn write_capacity_figures(r: &CapacityReport, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    if let Some(real) = &r.real {
        let path = dir.join("capacity-real.svg");
        let title =
            format!("KV memory over time, {} on CPU ({} KV budget)", real.model, human_bytes(real.budget_bytes));
        write_memory_figure(real, &path, &title, "seconds")?;
        written.push(path);
    }
    let path = dir.join("capacity-accounting.svg");
    let a = &r.accounting;
    let title =
        format!("KV memory per step, {} {} on an H100 80GB ({:.1} GiB KV budget)", a.model, a.dtype, gib(a.budget_bytes));
    write_memory_figure(a, &path, &title, "step")?;
    written.push(path);
    Ok(written)
}

// ANCHOR: figure
/// Reserved and used KV memory of both designs against time (or step), with the budget line.
pub fn write_memory_figure(run: &CapacityRun, path: &Path, title: &str, x_desc: &str) -> Result<()> {
    use plotters::prelude::*;
    // GiB for GPU-sized budgets, MiB for the CPU run's few megabytes.
    let (unit, unit_name) = if run.budget_bytes >= GIB { (GIB as f64, "GiB") } else { ((1u64 << 20) as f64, "MiB") };
    let to_gib = |b: u64| b as f64 / unit;
    let x_max = [&run.contiguous, &run.paged].iter().flat_map(|d| d.memory.last()).map(|m| m.0).fold(1e-9, f64::max);
    let y_max = to_gib(run.budget_bytes) * 1.45; // headroom for the legend
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    let y_desc = format!("KV memory ({unit_name})");
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_err)?;
    let budget = to_gib(run.budget_bytes);
    chart
        .draw_series(LineSeries::new(vec![(0.0, budget), (x_max, budget)], BLACK.stroke_width(1)))
        .map_err(plot_err)?
        .label("KV budget")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let lines = [
        (&run.contiguous, RGBColor(200, 40, 40), "ch04 contiguous: reserved"),
        (&run.paged, RGBColor(30, 90, 200), "ch05 paged: reserved"),
    ];
    for (design, color, label) in lines {
        // At most ~600 points a line: the SVG stays small and looks the same.
        let every = design.memory.len().div_ceil(600).max(1);
        let points: Vec<_> = design.memory.iter().step_by(every).chain(design.memory.last()).copied().collect();
        let reserved = points.iter().map(|&(x, r, _)| (x, to_gib(r)));
        chart
            .draw_series(LineSeries::new(reserved, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        let used = points.iter().map(|&(x, _, u)| (x, to_gib(u)));
        let light = color.mix(0.45);
        chart
            .draw_series(LineSeries::new(used, light.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.replace("reserved", "holding tokens"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
// ANCHOR_END: figure

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the figure: {e}")
}
