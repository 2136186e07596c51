//! Charts every stage draws (loss curves, score histograms), as plotly figures. One type,
//! [`Chart`], which writes a standalone HTML file and gives the plotly JSON a notebook renders.

use std::path::Path;

use anyhow::{Context, Result};
use plotly::common::{AxisSide, Mode, Title};
use plotly::layout::{Axis, BarMode, Layout};
use plotly::{Histogram, Plot, Scatter};

/// A finished plotly figure, kept rendered: plotly's `Plot` is neither `Send` nor `Sync`, and a
/// chart never changes once drawn.
#[derive(Clone, Debug)]
pub struct Chart {
    html: String,
    json: String,
}

/// One named series of points.
pub struct Series {
    pub name: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Chart {
    /// The figure as a standalone HTML page (plotly.js embedded: it renders offline).
    pub fn to_html(&self) -> String {
        self.html.clone()
    }

    /// The figure as plotly JSON (`{"data": …, "layout": …}`), what Jupyter's plotly renderer takes.
    pub fn to_json(&self) -> String {
        self.json.clone()
    }

    fn from_plot(plot: &Plot) -> Self {
        Self {
            html: plot.to_html(),
            json: plot.to_json(),
        }
    }

    pub fn write_html(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.html).with_context(|| format!("writing {}", path.display()))
    }

    /// Lines against a shared x axis: `left` on the left y axis, `right` (if any) on a second one.
    pub fn lines(
        title: &str,
        x_title: &str,
        left: (&str, Vec<Series>),
        right: Option<(&str, Vec<Series>)>,
    ) -> Self {
        let mut plot = Plot::new();
        for s in left.1 {
            plot.add_trace(Scatter::new(s.x, s.y).name(s.name).mode(Mode::Lines));
        }
        let mut layout = Layout::new()
            .title(Title::from(title))
            .x_axis(Axis::new().title(Title::from(x_title)))
            .y_axis(Axis::new().title(Title::from(left.0)));
        if let Some((label, series)) = right {
            for s in series {
                plot.add_trace(
                    Scatter::new(s.x, s.y)
                        .name(s.name)
                        .mode(Mode::LinesMarkers)
                        .y_axis("y2"),
                );
            }
            layout = layout.y_axis2(
                Axis::new()
                    .title(Title::from(label))
                    .overlaying("y")
                    .side(AxisSide::Right),
            );
        }
        plot.set_layout(layout);
        Self::from_plot(&plot)
    }

    /// Overlaid histograms of several samples.
    pub fn histograms(title: &str, x_title: &str, samples: Vec<(String, Vec<f64>)>) -> Self {
        let mut plot = Plot::new();
        for (name, values) in samples {
            plot.add_trace(Histogram::new(values).name(name).opacity(0.6));
        }
        plot.set_layout(
            Layout::new()
                .title(Title::from(title))
                .x_axis(Axis::new().title(Title::from(x_title)))
                .y_axis(Axis::new().title(Title::from("count")))
                .bar_mode(BarMode::Overlay),
        );
        Self::from_plot(&plot)
    }
}
