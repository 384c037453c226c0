//! The results: rows of porter's figure against a peer's, as a Markdown table and as a
//! PNG bar chart of porter's advantage (log scale, 1× = a tie).

use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// What a figure measures, and which way is better.
#[derive(Clone, Copy)]
pub enum Metric {
    MibPerSec,
    ReqPerSec,
    LatencyMs,
    RssMib,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::MibPerSec => "MiB/s",
            Metric::ReqPerSec => "req/s",
            Metric::LatencyMs => "ms",
            Metric::RssMib => "MiB RSS",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::MibPerSec | Metric::ReqPerSec)
    }
}

/// One comparison: porter's figure and a peer's (absent: the peer cannot do it, or is
/// not installed; `note` says which).
pub struct Row {
    pub scenario: String,
    pub storage: String,
    pub metric: Metric,
    pub porter: f64,
    pub peer: String,
    pub theirs: Option<f64>,
    pub note: String,
}

impl Row {
    /// How many times better porter is: > 1 means porter wins, whichever way the metric
    /// points.
    pub fn advantage(&self) -> Option<f64> {
        let theirs = self.theirs.filter(|t| *t > 0.0 && self.porter > 0.0)?;
        Some(if self.metric.higher_is_better() {
            self.porter / theirs
        } else {
            theirs / self.porter
        })
    }
}

fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | storage | unit | porter | peer | peer's | porter's advantage |\n\
         |---|---|---|---:|---|---:|---:|\n",
    );
    for r in rows {
        let theirs = r.theirs.map_or_else(|| r.note.clone(), figure);
        let adv = r
            .advantage()
            .map_or("—".to_string(), |a| format!("{a:.2}×"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {theirs} | {adv} |",
            r.scenario,
            r.storage,
            r.metric.unit(),
            figure(r.porter),
            r.peer
        );
    }
    out
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws porter's advantage per row with a peer figure to `path`.
pub fn chart(rows: &[Row], title: &str, path: &Path) -> Result<(), String> {
    let font = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| format!("{FONT}: not a usable font"))?;
    let bars: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|r| {
            let label = format!("{} [{}] vs {}", r.scenario, r.storage, r.peer);
            Some((label, r.advantage()?))
        })
        .collect();
    let height = 120 + 26 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    draw(&root, &bars, title).map_err(|e| format!("chart: {e}"))?;
    root.present()
        .map_err(|e| format!("chart {}: {e}", path.display()))
}

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    bars: &[(String, f64)],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let top = bars.iter().map(|b| b.1).fold(2.0f64, f64::max) * 1.4;
    let low = bars.iter().map(|b| b.1).fold(0.5f64, f64::min) / 1.4;
    let n = bars.len();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(620)
        .build_cartesian_2d((low..top).log_scale(), (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_labels(12)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars
                .get(n - 1 - *i)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("porter's advantage (× better; log scale; 1× = a tie)")
        .x_label_formatter(&|v| format!("{v:.2}×"))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, adv))| {
        let row = n - 1 - i;
        let color = if *adv >= 1.0 {
            GREEN.mix(0.7)
        } else {
            RED.mix(0.7)
        };
        Rectangle::new(
            [
                (1.0, SegmentValue::Exact(row)),
                (*adv, SegmentValue::Exact(row + 1)),
            ],
            color.filled(),
        )
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, adv))| {
        let row = n - 1 - i;
        Text::new(
            format!("{adv:.2}×"),
            (adv.max(1.0) * 1.02, SegmentValue::CenterOf(row)),
            ("sans-serif", 13),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        BLACK.stroke_width(2),
    )))?;
    Ok(())
}
