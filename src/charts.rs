//! Charts every stage draws (loss curves, score histograms), as plotly figures. One type,
//! [`Chart`], which writes a standalone HTML file and gives the plotly JSON a notebook renders.

use std::path::Path;

use anyhow::{Context, Result};
use plotly::common::{AxisSide, Mode, Title};
use plotly::layout::{Axis, BarMode, Layout};
use plotly::{Bar, Histogram, Plot, Scatter};

/// A finished plotly figure, kept rendered: plotly's `Plot` is neither `Send` nor `Sync`, and a
/// chart never changes once drawn.
#[derive(Clone, Debug)]
pub struct Chart {
    title: String,
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

    pub fn title(&self) -> &str {
        &self.title
    }

    /// An HTML fragment for notebooks that cannot render plotly JSON themselves: a div drawn by
    /// the page's plotly.js, loaded from plotly's CDN when the page has none (a standalone file,
    /// [`write_html`](Self::write_html), embeds it instead; this keeps notebooks small).
    pub fn to_html_fragment(&self) -> String {
        // Unique per fragment: the same chart shown twice needs two divs.
        static SHOWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "ragtune-chart-{}-{n}",
            crate::fingerprint::Fingerprint::default()
                .write(self.json.as_bytes())
                .hex()
        );
        format!(
            "<div id=\"{id}\" style=\"height:450px\"></div>\n<script>(function() {{\n\
             var figure = {json};\n\
             function draw() {{ Plotly.newPlot(\"{id}\", figure.data, figure.layout); }}\n\
             if (window.Plotly) {{ draw(); }} else {{\n\
             var s = document.createElement(\"script\");\n\
             s.src = \"https://cdn.plot.ly/plotly-2.35.2.min.js\"; s.onload = draw;\n\
             document.head.appendChild(s); }}\n}})();</script>",
            json = self.json.replace("</", "<\\/"),
        )
    }

    fn from_plot(plot: &Plot, title: &str) -> Self {
        Self {
            title: title.to_string(),
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
        Self::from_plot(&plot, title)
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
        Self::from_plot(&plot, title)
    }

    /// Grouped bars: one group per category, one bar per named series.
    pub fn bars(title: &str, categories: &[String], series: Vec<(String, Vec<f64>)>) -> Self {
        let mut plot = Plot::new();
        for (name, values) in series {
            plot.add_trace(Bar::new(categories.to_vec(), values).name(name));
        }
        plot.set_layout(
            Layout::new()
                .title(Title::from(title))
                .bar_mode(BarMode::Group),
        );
        Self::from_plot(&plot, title)
    }
}
