//! DataFrames as HTML tables: shape, column names with their dtypes, and the first and last rows
//! of long frames (the look of a notebook DataFrame, without its styling dependencies).

use polars::prelude::{AnyValue, DataFrame};

/// Rows shown before a frame is cut to its head and tail.
const MAX_ROWS: usize = 10;
/// Characters of one cell shown before it is cut.
const MAX_CELL: usize = 160;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn cell(value: &AnyValue) -> String {
    let text = match value {
        AnyValue::Null => "null".to_string(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float32(x) => format!("{x:.4}"),
        AnyValue::Float64(x) => format!("{x:.4}"),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_CELL {
        let cut: String = text.chars().take(MAX_CELL).collect();
        escape(&format!("{cut}…"))
    } else {
        escape(&text)
    }
}

/// The frame as an HTML table with its shape and dtypes; frames longer than ten rows show their
/// first and last five.
pub fn frame_html(df: &DataFrame, caption: Option<&str>) -> String {
    let (height, width) = df.shape();
    let mut html = String::from("<div class=\"ragtune-frame\">\n");
    if let Some(caption) = caption {
        html.push_str(&format!("<p>{}</p>\n", escape(caption)));
    }
    html.push_str(&format!(
        "<small>shape: ({height}, {width})</small>\n<table class=\"dataframe\" border=\"1\">\n<thead>\n<tr>"
    ));
    for column in df.columns() {
        html.push_str(&format!("<th>{}</th>", escape(column.name())));
    }
    html.push_str("</tr>\n<tr>");
    for column in df.columns() {
        html.push_str(&format!(
            "<td><i>{}</i></td>",
            escape(&column.dtype().to_string())
        ));
    }
    html.push_str("</tr>\n</thead>\n<tbody>\n");
    let rows: Vec<Option<usize>> = if height > MAX_ROWS {
        let half = MAX_ROWS / 2;
        (0..half)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((height - half..height).map(Some))
            .collect()
    } else {
        (0..height).map(Some).collect()
    };
    for row in rows {
        html.push_str("<tr>");
        for column in df.columns() {
            let text = match row {
                Some(i) => column.get(i).map(|v| cell(&v)).unwrap_or_default(),
                None => "…".to_string(),
            };
            html.push_str(&format!("<td>{text}</td>"));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n</div>");
    html
}

/// A two-column table of named values.
pub fn key_value_html(caption: &str, rows: &[(String, String)]) -> String {
    let mut html = format!(
        "<div class=\"ragtune-summary\">\n<p>{}</p>\n<table border=\"1\">\n<tbody>\n",
        escape(caption)
    );
    for (key, value) in rows {
        html.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(key),
            escape(value)
        ));
    }
    html.push_str("</tbody>\n</table>\n</div>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn long_frames_show_head_and_tail_with_dtypes_and_escaping() {
        let ids: Vec<i64> = (0..25).collect();
        let texts: Vec<String> = (0..25).map(|i| format!("<b>row {i}</b>")).collect();
        let df = df!("id" => ids, "text" => texts).unwrap();
        let html = frame_html(&df, Some("a & b"));
        assert!(html.contains("shape: (25, 2)"));
        assert!(html.contains("<p>a &amp; b</p>"));
        assert!(
            html.contains("<td><i>i64</i></td><td><i>str</i></td>"),
            "{html}"
        );
        assert!(html.contains("<td>4</td><td>&lt;b&gt;row 4&lt;/b&gt;</td>"));
        assert!(!html.contains("row 5<"), "row 5 is in the elided middle");
        assert!(html.contains("<td>…</td><td>…</td>"));
        assert!(html.contains("<td>24</td>"));
        assert_eq!(html.matches("<tr>").count(), 2 + 11);
    }

    #[test]
    fn long_cells_are_cut() {
        let df = df!("t" => ["x".repeat(500)]).unwrap();
        let html = frame_html(&df, None);
        assert!(html.contains(&format!("{}…", "x".repeat(MAX_CELL))));
        assert!(!html.contains(&"x".repeat(MAX_CELL + 1)));
    }
}
