//! How results look, decided once per type: plain text for terminals, HTML for notebooks, plotly
//! JSON for charts. The REPL, `ragtune run`, the Jupyter kernel and evcxr notebooks all show
//! values through [`Render`], so a table looks the same wherever it is printed.

mod table;

use polars::prelude::DataFrame;

use crate::charts::Chart;
use crate::eval::RetrievalReport;
use crate::mine::Mined;
use crate::train::TrainOutcome;

pub use table::{escape, frame_html};

/// A value's representations, richest last: every value has text; tables add HTML; charts add
/// plotly JSON (with an HTML fallback).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rich {
    pub text: String,
    pub html: Option<String>,
    /// `{"data": …, "layout": …}`, Jupyter's `application/vnd.plotly.v1+json`.
    pub plotly: Option<serde_json::Value>,
}

impl Rich {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// The MIME bundle of a Jupyter `execute_result` / `display_data`.
    pub fn mime_bundle(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut bundle = serde_json::Map::new();
        bundle.insert("text/plain".into(), self.text.clone().into());
        if let Some(html) = &self.html {
            bundle.insert("text/html".into(), html.clone().into());
        }
        if let Some(plotly) = &self.plotly {
            bundle.insert(PLOTLY_MIME.into(), plotly.clone());
        }
        bundle
    }

    /// evcxr's display protocol: one `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT` block per
    /// representation richer than text.
    pub fn evcxr_blocks(&self) -> String {
        let mut out = String::new();
        let mut block = |mime: &str, body: &str| {
            out.push_str(&format!(
                "EVCXR_BEGIN_CONTENT {mime}\n{body}\nEVCXR_END_CONTENT\n"
            ));
        };
        if let Some(plotly) = &self.plotly {
            block(PLOTLY_MIME, &plotly.to_string());
        }
        if let Some(html) = &self.html {
            block("text/html", html);
        }
        if self.plotly.is_none() && self.html.is_none() {
            block("text/plain", &self.text);
        }
        out
    }
}

pub const PLOTLY_MIME: &str = "application/vnd.plotly.v1+json";

/// Types with a display for terminals and notebooks.
pub trait Render {
    fn render(&self) -> Rich;

    /// Shows the value in an evcxr notebook (`use ragtune::render::Render;` then `value.evcxr_display()`;
    /// evcxr calls it by itself for a cell's final value).
    fn evcxr_display(&self) {
        print!("{}", self.render().evcxr_blocks());
    }
}

impl Render for DataFrame {
    fn render(&self) -> Rich {
        Rich {
            text: self.to_string(),
            html: Some(frame_html(self, None)),
            plotly: None,
        }
    }
}

impl Render for Chart {
    fn render(&self) -> Rich {
        Rich {
            text: format!(
                "Chart \"{}\" (plotly; write_html(path) saves it)",
                self.title()
            ),
            html: Some(self.to_html_fragment()),
            plotly: serde_json::from_str(&self.to_json()).ok(),
        }
    }
}

impl Render for RetrievalReport {
    fn render(&self) -> Rich {
        let caption = format!(
            "{} on {} ({} queries, {} documents)",
            self.model, self.dataset, self.queries, self.documents
        );
        match self.to_frame() {
            Ok(df) => Rich {
                text: format!("{caption}\n{df}"),
                html: Some(frame_html(&df, Some(&caption))),
                plotly: None,
            },
            Err(e) => Rich::text(format!("{caption}\n(cannot tabulate: {e})")),
        }
    }
}

impl Render for crate::eval::RerankReport {
    fn render(&self) -> Rich {
        let caption = format!(
            "{} reranked by {} on {} ({} queries, top {}, {:.0} pairs/s)",
            self.retriever,
            self.reranker,
            self.dataset,
            self.queries,
            self.top_k,
            self.pairs as f64 / self.rerank_seconds.max(1e-9)
        );
        match self.headline_frame() {
            Ok(df) => Rich {
                text: format!("{caption}\n{df}"),
                html: Some(frame_html(&df, Some(&caption))),
                plotly: None,
            },
            Err(e) => Rich::text(format!("{caption}\n(cannot tabulate: {e})")),
        }
    }
}

impl Render for crate::raft::RaftSet {
    fn render(&self) -> Rich {
        let s = &self.summary;
        let caption = format!(
            "RAFT: {} examples ({} with the oracle, {} without; {} train, {} dev), {} distractors each ({:?}); \
             {} regenerated, {} dropped; evidence kept by the cut {}/{}",
            s.examples,
            s.with_oracle,
            s.without_oracle,
            s.train,
            s.dev,
            self.options.k,
            self.options.distractors,
            s.regenerated,
            s.dropped,
            s.evidence_kept,
            s.evidence_sentences
        );
        match self.to_frame().map(|f| f.head(Some(5))) {
            Ok(head) => Rich {
                text: format!("{caption}\n{head}"),
                html: Some(frame_html(&head, Some(&caption))),
                plotly: None,
            },
            Err(e) => Rich::text(format!("{caption}\n(cannot tabulate: {e})")),
        }
    }
}

impl Render for crate::eval::grounded::GroundedReport {
    fn render(&self) -> Rich {
        let caption = format!(
            "Grounded generation, base vs tuned ({} examples)",
            self.base.n
        );
        match self.to_frame() {
            Ok(df) => {
                let text = self
                    .rows()
                    .iter()
                    .map(|(n, b, t)| {
                        let f = |v: &Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
                        format!("{n:<26} {:>8} {:>8}", f(b), f(t))
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                Rich {
                    text: format!(
                        "{caption}\n{:<26} {:>8} {:>8}\n{text}",
                        "metric", "base", "tuned"
                    ),
                    html: Some(frame_html(&df, Some(&caption))),
                    plotly: None,
                }
            }
            Err(e) => Rich::text(format!("{caption}\n(cannot tabulate: {e})")),
        }
    }
}

impl Render for TrainOutcome {
    fn render(&self) -> Rich {
        let mut text = format!(
            "TrainRun({} on {} examples: {} steps, {:.2} s/step, final loss {:.4}",
            self.loss, self.examples, self.steps, self.seconds_per_step, self.final_loss
        );
        let dev = |m: &Option<crate::eval::metrics::MetricValues>| {
            m.as_ref().and_then(|m| m.get(&self.metric).copied())
        };
        let mut rows: Vec<(String, String)> = vec![
            ("loss".into(), self.loss.clone()),
            ("examples".into(), self.examples.to_string()),
            ("steps".into(), self.steps.to_string()),
            (
                "seconds per step".into(),
                format!("{:.2}", self.seconds_per_step),
            ),
            ("final loss".into(), format!("{:.4}", self.final_loss)),
        ];
        if let (Some(b), Some(a)) = (dev(&self.dev_before), dev(&self.dev_after)) {
            text.push_str(&format!("; dev {} {b:.4} -> {a:.4}", self.metric));
            rows.push((format!("dev {} before", self.metric), format!("{b:.4}")));
            rows.push((format!("dev {} after", self.metric), format!("{a:.4}")));
        }
        if let Some(f) = &self.fusion {
            text.push_str(&format!(
                "; fusion weight {} on {} held-out queries: NDCG@10 {:.4} (retriever {:.4})",
                f.retriever_weight, f.queries, f.fused_ndcg10, f.retriever_ndcg10
            ));
            rows.push(("fusion weight".into(), f.retriever_weight.to_string()));
            rows.push((
                "held-out NDCG@10 fused / retriever / reranker".into(),
                format!(
                    "{:.4} / {:.4} / {:.4}",
                    f.fused_ndcg10, f.retriever_ndcg10, f.reranker_ndcg10
                ),
            ));
        }
        text.push_str(&format!("; saved in {})", self.output.display()));
        rows.push(("saved in".into(), self.output.display().to_string()));
        Rich {
            text,
            html: Some(table::key_value_html("Training run", &rows)),
            plotly: None,
        }
    }
}

impl Render for Mined {
    fn render(&self) -> Rich {
        let caption = format!(
            "Mined {} rows for {} queries ({} with fewer negatives than asked)",
            self.frame.height(),
            self.queries,
            self.short_queries
        );
        Rich {
            text: format!("{caption}\n{}", self.summary),
            html: Some(frame_html(&self.summary, Some(&caption))),
            plotly: None,
        }
    }
}

impl Render for crate::synth::SynthOutcome {
    fn render(&self) -> Rich {
        let caption = self.summary();
        match self.frame().map(|f| f.head(Some(5))) {
            Ok(head) => Rich {
                text: format!("{caption}\n{head}"),
                html: Some(frame_html(&head, Some(&caption))),
                plotly: None,
            },
            Err(e) => Rich::text(format!("{caption}\n(cannot tabulate: {e})")),
        }
    }
}

impl Render for crate::pipeline::evaluate::PipelineComparison {
    /// Every row (headline metrics are never hidden behind an ellipsis), and the bar chart.
    fn render(&self) -> Rich {
        let text = self.to_text();
        let html = self.to_frame().ok().map(|df| {
            format!(
                "{}<p>base: {}<br>tuned: {}<br>difference: mean of per-question differences, 95% paired-bootstrap interval</p>",
                frame_html(&df, Some("Pipeline, stage by stage: base vs tuned")),
                escape(&self.base),
                escape(&self.tuned)
            )
        });
        Rich {
            text,
            html,
            plotly: None,
        }
    }
}

impl Render for crate::pipeline::PipelineOutcome {
    fn render(&self) -> Rich {
        let rows: Vec<(String, String)> = self
            .stages
            .iter()
            .map(|s| {
                (
                    s.stage.clone(),
                    format!("{} in {:.1} s: {}", s.status, s.seconds, s.figures),
                )
            })
            .collect();
        let mut html =
            table::key_value_html(&format!("Pipeline in {}", self.output.display()), &rows);
        if let Some(c) = &self.comparison {
            if let Some(h) = c.render().html {
                html.push_str(&h);
            }
        }
        Rich {
            text: self.to_text(),
            html: Some(html),
            plotly: None,
        }
    }
}

impl Render for crate::pipeline::rag::RagAnswer {
    fn render(&self) -> Rich {
        let mut html = format!(
            "<div class=\"ragtune-answer\"><p><b>{}</b></p><p>{}</p>",
            escape(&self.question),
            escape(self.answer.as_deref().unwrap_or("(retrieval only)")).replace('\n', "<br>")
        );
        if !self.quotes.is_empty() {
            html.push_str("<ul>");
            for q in &self.quotes {
                html.push_str(&format!(
                    "<li>{} “{}” {}</li>",
                    if q.verified {
                        "✓"
                    } else {
                        "✗ not in the documents"
                    },
                    escape(&q.text),
                    escape(&q.doc_ids.join(", "))
                ));
            }
            html.push_str("</ul>");
        }
        let rows: Vec<(String, String)> = self
            .passages
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{}. {}", i + 1, p.doc_id), p.text.clone()))
            .collect();
        html.push_str(&table::key_value_html("documents read", &rows));
        html.push_str("</div>");
        Rich {
            text: self.to_text(),
            html: Some(html),
            plotly: None,
        }
    }
}

impl Render for crate::pipeline::diagnose::Diagnosis {
    fn render(&self) -> Rich {
        let rows: Vec<(String, String)> = self
            .checks
            .iter()
            .map(|c| {
                (
                    format!("{} {}", if c.passed { "✓" } else { "✗" }, c.name),
                    format!("{} (threshold {})", c.measured, c.threshold),
                )
            })
            .collect();
        let mut html = table::key_value_html("Diagnosis", &rows);
        html.push_str(&format!("<p>{}</p>", escape(&self.advice)));
        Rich {
            text: self.to_text(),
            html: Some(html),
            plotly: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_bundles_and_evcxr_blocks_carry_every_representation() {
        let chart = Chart::lines(
            "loss",
            "step",
            (
                "loss",
                vec![crate::charts::Series {
                    name: "train".into(),
                    x: vec![1.0, 2.0],
                    y: vec![0.5, 0.25],
                }],
            ),
            None,
        );
        let rich = chart.render();
        let bundle = rich.mime_bundle();
        assert_eq!(
            bundle["text/plain"],
            "Chart \"loss\" (plotly; write_html(path) saves it)"
        );
        assert_eq!(
            bundle[PLOTLY_MIME]["data"][0]["y"],
            serde_json::json!([0.5, 0.25])
        );
        assert!(bundle["text/html"]
            .as_str()
            .unwrap()
            .contains("Plotly.newPlot"));
        let blocks = rich.evcxr_blocks();
        assert!(
            blocks.starts_with(&format!("EVCXR_BEGIN_CONTENT {PLOTLY_MIME}\n{{")),
            "{blocks}"
        );
        assert_eq!(blocks.matches("EVCXR_END_CONTENT\n").count(), 2);

        let text = Rich::text("plain").evcxr_blocks();
        assert_eq!(
            text,
            "EVCXR_BEGIN_CONTENT text/plain\nplain\nEVCXR_END_CONTENT\n"
        );
        let frame = polars::prelude::df!("a" => [1i64, 2]).unwrap().render();
        assert!(frame.html.unwrap().contains("shape: (2, 1)"));
        assert!(frame.text.contains("shape: (2, 1)"));
    }
}
