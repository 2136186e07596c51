//! Readable text from HTML without a DOM: tags dropped, `script`/`style`/`head` contents dropped,
//! block elements and `<br>` turned into line breaks (paragraphs into blank lines, so the
//! sentence splitter sees them), entities decoded, runs of spaces folded.

/// (title, text) of an HTML page.
pub fn to_text(html: &str) -> (String, String) {
    let title = between_tags(html, "title")
        .map(decode_entities)
        .unwrap_or_default();
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    // Text between tags: whitespace, line breaks included, is one space (as browsers render it).
    let push_text = |out: &mut String, text: &str| {
        for c in text.chars() {
            out.push(if c.is_whitespace() { ' ' } else { c });
        }
    };
    while let Some(open) = rest.find('<') {
        push_text(&mut out, &rest[..open]);
        rest = &rest[open..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = rest[1..close].trim().to_ascii_lowercase();
        rest = &rest[close + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if !tag.starts_with('/')
            && matches!(
                name.as_str(),
                "script" | "style" | "head" | "noscript" | "template"
            )
        {
            // Skip to the matching closing tag.
            let end = format!("</{name}");
            rest = match rest.to_ascii_lowercase().find(&end) {
                Some(e) => rest[e..].find('>').map_or("", |c| &rest[e + c + 1..]),
                None => "",
            };
            continue;
        }
        match name.as_str() {
            "p" | "div" | "section" | "article" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
            | "ul" | "ol" | "table" | "blockquote" | "pre" | "header" | "footer" | "main"
            | "nav" | "aside" => out.push_str("\n\n"),
            "br" => out.push('\n'),
            // List items and rows start a line; their closing tags add nothing.
            "li" | "tr" | "dt" | "dd" if !tag.starts_with('/') => out.push('\n'),
            "td" | "th" => out.push(' '),
            _ => {}
        }
    }
    push_text(&mut out, rest);
    (title.trim().to_string(), tidy(&decode_entities(&out)))
}

fn between_tags<'a>(html: &'a str, tag: &str) -> Option<&'a str> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find(&format!("<{tag}"))?;
    let start = start + lower[start..].find('>')? + 1;
    let end = start + lower[start..].find(&format!("</{tag}"))?;
    Some(&html[start..end])
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                "ndash" => Some('–'),
                "mdash" => Some('—'),
                "hellip" => Some('…'),
                "rsquo" => Some('’'),
                "lsquo" => Some('‘'),
                "ldquo" => Some('“'),
                "rdquo" => Some('”'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Folds spaces within lines and keeps at most one blank line between paragraphs.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        out.push_str(&line);
        blank = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_drops_markup_and_scripts() {
        let (title, text) = to_text(
            "<html><head><title>Hive &amp; Co</title><style>p{}</style></head><body>\
             <script>var x = '<p>';</script><h1>Queens</h1><p>A queen lays\n   eggs &lt;daily&gt;.</p>\
             <!-- note --><ul><li>one</li><li>two&#33; &#x263A;</li></ul></body></html>",
        );
        assert_eq!(title, "Hive & Co");
        assert_eq!(text, "Queens\n\nA queen lays eggs <daily>.\n\none\ntwo! ☺");
    }

    #[test]
    fn stray_ampersands_survive() {
        assert_eq!(to_text("<p>R&D & more;</p>").1, "R&D & more;");
    }
}
