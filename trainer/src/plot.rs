//! PNG charts of evaluation reports: the accuracy / speed-up trade-off (several runs on one chart for the
//! ablation of the paper's Figure 4), exit-layer histograms across τ, and per-layer accuracy with DIS.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (ab_glyph), so plotting needs no system fonts.

use crate::error::{Result, TrainerError};
use crate::eval::EvalReport;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(TrainerError::Plot { path: "DejaVuSans.ttf".into(), message: "the bundled font does not parse".into() })
    }
}

fn plot_err(path: &Path) -> impl Fn(String) -> TrainerError + '_ {
    move |message| TrainerError::Plot { path: path.display().to_string(), message }
}

fn headline(report: &EvalReport) -> String {
    format!("{} dev, signal {}", report.task, report.signal)
}

type LineChart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draws the series legend at `position` and writes the image: the last step of every line chart here.
fn finish_with_legend(
    chart: &mut LineChart<'_>,
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Accuracy (%) against speed-up (Eq. 12), one line per report. Points are the τ of each sweep.
pub fn tradeoff(runs: &[(String, &EvalReport)], path: &Path) -> Result<()> {
    register_font()?;
    let err = plot_err(path);
    let points: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            let mut p: Vec<(f64, f64)> = r.sweep.iter().map(|s| (s.layer_speedup, 100.0 * s.accuracy)).collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            p
        })
        .collect();
    let all = points.iter().flatten();
    let (x_max, y_min, y_max) = all
        .fold((1.0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), &(sx, sy)| (x.max(sx), lo.min(sy), hi.max(sy)));
    if !y_min.is_finite() {
        return Err(err("no sweep points to plot".into()));
    }
    let pad = ((y_max - y_min) * 0.08).max(0.5);
    let title = match runs {
        [(_, r)] => format!("Accuracy vs speed-up — {}", headline(r)),
        [(_, r), ..] => format!("Accuracy vs speed-up — {} dev", r.task),
        [] => return Err(err("no runs to plot".into())),
    };

    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.95f64..x_max * 1.05 + 0.05, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("speed-up (Eq. 12, layers)")
        .y_desc("accuracy (%)")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, ((label, _), pts)) in runs.iter().zip(&points).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(e.to_string()))?;
    }
    finish_with_legend(&mut chart, &root, SeriesLabelPosition::UpperRight).map_err(err)
}

/// The objective comparison: for each objective, its mean metric (%) over seeds at the fixed layer speed-ups
/// (a line), with the range over seeds (a bar), and full depth at 1×.
pub fn objectives(runs: &[crate::results::RunResult], title: &str, path: &Path) -> Result<()> {
    register_font()?;
    let err = plot_err(path);
    let groups = crate::results::summarize(runs);
    let series: Vec<(String, Vec<(f64, crate::results::Spread)>)> = groups
        .iter()
        .map(|g| {
            let mut pts = vec![(1.0, g.full_depth)];
            pts.extend(g.at_speedup.iter().filter_map(|(x, s)| s.map(|s| (*x, s))));
            (g.name.clone(), pts)
        })
        .collect();
    let values = series.iter().flat_map(|(_, p)| p.iter().flat_map(|(_, s)| [s.min, s.max]));
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(100.0 * v), hi.max(100.0 * v)));
    if !lo.is_finite() {
        return Err(err("no results to plot".into()));
    }
    let x_max = cosee_format::metrics::REPORTED_SPEEDUPS.iter().copied().fold(1.0, f64::max);
    let pad = ((hi - lo) * 0.08).max(0.5);
    let metric = runs.first().map_or("accuracy", |r| r.metric.as_str());
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.9f64..x_max + 0.2, (lo - pad)..(hi + pad))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("layer speed-up (Eq. 12)")
        .y_desc(format!("{metric} (%), mean over seeds; bars: min–max"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Objectives share x positions; a small offset keeps their bars apart.
        let dx = (i as f64 - (series.len() as f64 - 1.0) / 2.0) * 0.03;
        let line: Vec<(f64, f64)> = pts.iter().map(|(x, s)| (x + dx, 100.0 * s.mean)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(format!("{name} ({} seeds)", pts.first().map_or(0, |p| p.1.runs)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|(x, s)| {
                ErrorBar::new_vertical(x + dx, 100.0 * s.min, 100.0 * s.mean, 100.0 * s.max, color.filled(), 8)
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    finish_with_legend(&mut chart, &root, SeriesLabelPosition::LowerLeft).map_err(err)
}

/// Exit-layer histograms (share of samples per layer) for up to six τ spread over the sweep.
pub fn exit_histograms(report: &EvalReport, path: &Path) -> Result<()> {
    register_font()?;
    let err = plot_err(path);
    let n = report.sweep.len();
    if n == 0 {
        return Err(err("the report has no sweep".into()));
    }
    let panels = n.min(6);
    let picks: Vec<usize> = (0..panels).map(|i| if panels == 1 { 0 } else { i * (n - 1) / (panels - 1) }).collect();
    let cols = panels.min(3);
    let rows = panels.div_ceil(cols);
    let root = BitMapBackend::new(path, (360 * cols as u32, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root =
        root.titled(&format!("Exit layers — {}", headline(report)), (FAMILY, 22)).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((rows, cols));
    let layers = report.num_layers;
    for (area, &i) in areas.iter().zip(&picks) {
        let point = &report.sweep[i];
        let total = point.exit_histogram.iter().sum::<usize>().max(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("τ = {:.2}: {:.2}x, acc {:.1}%", point.threshold, point.layer_speedup, 100.0 * point.accuracy),
                (FAMILY, 15),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.5f64..layers as f64 + 0.5, 0.0f64..100.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_labels(layers.min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("% of samples")
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 12))
            .disable_x_mesh()
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(point.exit_histogram.iter().enumerate().map(|(m, &count)| {
                let x = (m + 1) as f64;
                Rectangle::new([(x - 0.38, 0.0), (x + 0.38, 100.0 * count as f64 / total)], BLUE.mix(0.7).filled())
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// Per-layer accuracy (%) and DIS (×100) of one report.
pub fn layers(report: &EvalReport, path: &Path) -> Result<()> {
    register_font()?;
    let err = plot_err(path);
    let acc: Vec<(f64, f64)> = report.layers.iter().map(|l| (l.layer as f64, 100.0 * l.accuracy)).collect();
    let dis: Vec<(f64, f64)> =
        report.layers.iter().filter_map(|l| l.dis.map(|d| (l.layer as f64, 100.0 * d))).collect();
    let lo = acc.iter().chain(&dis).map(|p| p.1).fold(100.0f64, f64::min);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Per-layer accuracy and DIS — {}", headline(report)), (FAMILY, 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..report.num_layers as f64 + 0.5, (lo - 5.0).max(0.0)..100.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_labels(report.num_layers.min(24))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("exit layer")
        .y_desc("%")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (name, pts)) in [("accuracy", &acc), ("DIS", &dis)].into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// The three charts of one report, as `<stem>_tradeoff.png`, `<stem>_exits.png`, `<stem>_layers.png`.
pub fn all(report: &EvalReport, dir: &Path, stem: &str, label: &str) -> Result<Vec<std::path::PathBuf>> {
    let paths = [
        dir.join(format!("{stem}_tradeoff.png")),
        dir.join(format!("{stem}_exits.png")),
        dir.join(format!("{stem}_layers.png")),
    ];
    tradeoff(&[(label.to_string(), report)], &paths[0])?;
    exit_histograms(report, &paths[1])?;
    layers(report, &paths[2])?;
    Ok(paths.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{evaluate, ExitOutputs};
    use cosee_format::glue::Task;
    use cosee_format::signal::ExitSignal;

    #[test]
    fn writes_the_three_charts_and_an_overlay() {
        let outputs = ExitOutputs {
            logits: vec![
                vec![vec![2.0, -1.0], vec![0.2, 0.1], vec![-1.5, 1.0], vec![0.0, 0.3]],
                vec![vec![3.0, -2.0], vec![-0.5, 0.9], vec![-2.0, 2.0], vec![0.5, 0.1]],
                vec![vec![4.0, -3.0], vec![-1.0, 1.2], vec![-3.0, 3.0], vec![-0.4, 0.6]],
            ],
            labels: vec![0, 1, 1, 1],
        };
        let report = evaluate(&outputs, Task::Sst2, ExitSignal::Energy, &ExitSignal::Energy.default_sweep(3));
        let dir = tempfile::tempdir().unwrap();
        let paths = all(&report, dir.path(), "eval", "tiny").unwrap();
        let overlay = dir.path().join("overlay.png");
        tradeoff(&[("a".into(), &report), ("b".into(), &report)], &overlay).unwrap();
        let mut run = crate::results::RunResult {
            at_speedup: [("2.0".to_string(), 0.88), ("3.0".to_string(), 0.85)].into_iter().collect(),
            ..crate::results::example_run("cosee", 1)
        };
        let mut runs = vec![run.clone()];
        run.seed = 2;
        run.at_speedup.insert("2.0".into(), 0.86);
        runs.push(run.clone());
        run.objective = "conventional".into();
        runs.push(run);
        let comparison = dir.path().join("objectives.png");
        objectives(&runs, "SST-2", &comparison).unwrap();
        for path in paths.iter().chain([&overlay, &comparison]) {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", path.display());
            assert!(bytes.len() > 5_000, "{} is suspiciously small", path.display());
        }
    }
}
