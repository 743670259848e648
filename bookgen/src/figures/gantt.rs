//! The Gantt chart of cache slots over time (SVG), drawn from a real run's trace.

use crate::figures::bars::bars;
use ch00_serving::{Phase, TraceStep};
use plotters::prelude::*;

/// How to draw a Gantt chart.
#[derive(Debug, Clone)]
pub struct GanttOptions {
    pub title: String,
    /// Slots on the y axis (rows of the chart), whether or not the trace uses them all.
    pub num_slots: usize,
    /// Right end of the time axis in seconds, so two charts can share a scale.
    pub x_max_s: f64,
    pub width: u32,
    pub height: u32,
}

/// A colour per request (golden-ratio hues, so neighbours differ); prefill darker, padding grey.
fn colour(request: u64, phase: Phase) -> RGBColor {
    let hue = (request as f64 * 0.618_033_988_75).fract();
    let (s, l) = match phase {
        Phase::Prefill => (0.75, 0.30),
        Phase::Decode => (0.60, 0.62),
        Phase::Padding => return RGBColor(205, 205, 205),
    };
    hsl_to_rgb(hue, s, l)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> RGBColor {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h * 6.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(byte(r), byte(g), byte(b))
}

// ANCHOR: gantt
/// Draws the Gantt chart of a trace as an SVG document: one row per slot, one bar per request
/// (its id written at the start), dark while it prefills, coloured while it decodes, grey while
/// it has finished but is still computed as padding (static batching), its output thrown away.
pub fn gantt_svg(trace: &[TraceStep], opts: &GanttOptions) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (opts.width, opts.height)).into_drawing_area();
        root.fill(&WHITE)?;
        let slots = opts.num_slots.max(1);
        let x_max = opts.x_max_s.max(trace.last().map_or(0.0, |s| s.t_s)).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption(&opts.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x_max, -0.5..slots as f64 - 0.5)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(slots)
            .y_label_formatter(&|y| format!("slot {}", y.round()))
            .x_desc("seconds since the start of the run    (dark: prefill, light: decode, grey: finished, computed as padding, output discarded)")
            .draw()?;
        let bars = bars(trace);
        chart.draw_series(bars.iter().map(|r| {
            let y = r.slot as f64;
            Rectangle::new([(r.start_s, y - 0.4), (r.end_s, y + 0.4)], colour(r.request, r.phase).filled())
        }))?;
        // Label each request at the start of its time in a slot, if that time is wide enough.
        let px_per_s = opts.width as f64 / x_max;
        let labels = bars.iter().filter(|r| r.phase != Phase::Padding).filter_map(|r| {
            let mine = bars.iter().filter(|o| o.slot == r.slot && o.request == r.request && o.phase != Phase::Padding);
            let (first, last) = mine.fold((f64::MAX, 0.0f64), |(a, b), o| (a.min(o.start_s), b.max(o.end_s)));
            let wide = (last - first) * px_per_s > 16.0;
            (first == r.start_s && wide).then(|| {
                let font = ("sans-serif", 11).into_font().color(&BLACK);
                Text::new(format!("{}", r.request), (r.start_s + 3.0 / px_per_s, r.slot as f64 + 0.15), font)
            })
        });
        chart.draw_series(labels)?;
        root.present()?;
    }
    Ok(svg)
}
// ANCHOR_END: gantt

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::bars::Bar;
    use ch00_serving::TraceEntry;

    fn step(step: usize, t_s: f64, entries: &[(usize, u64, Phase)]) -> TraceStep {
        let entries =
            entries.iter().map(|&(slot, request, phase)| TraceEntry { slot, request, phase, tokens: 1 }).collect();
        TraceStep { step, t_s, entries, kv_bytes_allocated: 0, kv_bytes_used: 0, preempted: Vec::new() }
    }

    #[test]
    fn consecutive_steps_merge_into_one_bar_per_phase() {
        let trace = [
            step(0, 1.0, &[(0, 7, Phase::Prefill), (1, 8, Phase::Prefill)]),
            step(1, 2.0, &[(0, 7, Phase::Decode), (1, 8, Phase::Decode)]),
            step(2, 3.0, &[(0, 7, Phase::Decode), (1, 8, Phase::Padding)]),
        ];
        let bars = bars(&trace);
        let want = |slot, request, phase, start_s, end_s| Bar { slot, request, phase, start_s, end_s };
        assert_eq!(
            bars,
            vec![
                want(0, 7, Phase::Prefill, 0.0, 1.0),
                want(0, 7, Phase::Decode, 1.0, 3.0),
                want(1, 8, Phase::Prefill, 0.0, 1.0),
                want(1, 8, Phase::Decode, 1.0, 2.0),
                want(1, 8, Phase::Padding, 2.0, 3.0),
            ]
        );
        let opts = GanttOptions { title: "t".into(), num_slots: 2, x_max_s: 3.0, width: 400, height: 200 };
        let svg = gantt_svg(&trace, &opts).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("slot 1") && svg.contains("prefill"), "{svg}");
    }
}
