//! Sentence boundaries by rule, as byte spans of the original text (so chunks keep the text's own
//! spacing and line breaks). A boundary is a blank line, a line that starts a list item or
//! heading (or ends one), or `.`/`!`/`?` (with closing quotes or brackets) followed by whitespace and a capital,
//! digit, quote or bracket — unless the word before the period is a common abbreviation or an
//! initial.

/// Words that end with a period without ending a sentence (compared lowercase, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "al", "fig",
    "figs", "no", "vol", "approx", "cf", "inc", "ltd", "co", "corp", "dept", "eq", "ref", "refs",
    "ca", "resp", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec",
];

/// Byte ranges `(start, end)` of the sentences of `text`, trimmed, in order, never empty.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        let mut cut = None;
        if c == '\n' {
            // A blank line, or a new line that opens a list item or heading, ends the sentence.
            // So does the end of a heading or list-item line.
            let rest = &text[pos + 1..];
            let next_line = rest.trim_start_matches([' ', '\t']);
            let line_start = text[..pos].rfind('\n').map_or(0, |p| p + 1);
            let line = text[line_start..pos].trim_start();
            if next_line.starts_with('\n') || starts_block(next_line) || starts_block(line) {
                cut = Some(pos);
            }
        } else if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len()
                && matches!(
                    chars[j].1,
                    '.' | '!' | '?' | '"' | '\'' | ')' | ']' | '’' | '”'
                )
            {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |c| c.0);
            let after = &text[end..];
            let next = after.trim_start();
            let spaced = after.len() > next.len() || after.is_empty();
            let opens = next.chars().next().is_none_or(|n| {
                n.is_uppercase()
                    || n.is_ascii_digit()
                    || matches!(n, '"' | '\'' | '(' | '[' | '“' | '‘')
            });
            if spaced && opens && !(c == '.' && abbreviation_before(text, pos)) {
                cut = Some(end);
                i = j - 1;
            }
        }
        if let Some(end) = cut {
            push_trimmed(text, start, end, &mut spans);
            start = end;
        }
        i += 1;
    }
    push_trimmed(text, start, text.len(), &mut spans);
    spans
}

fn starts_block(line: &str) -> bool {
    let mut chars = line.chars();
    match chars.next() {
        Some('#') => true,
        Some('-' | '*' | '•') => chars.next() == Some(' '),
        Some(d) if d.is_ascii_digit() => {
            let rest = line.trim_start_matches(|c: char| c.is_ascii_digit());
            rest.starts_with(". ") || rest.starts_with(") ")
        }
        _ => false,
    }
}

/// Is the word ending at the period at byte `dot` an abbreviation or a single-letter initial?
fn abbreviation_before(text: &str, dot: usize) -> bool {
    let before = &text[..dot];
    let word_start = before
        .rfind(|c: char| c.is_whitespace() || c == '(' || c == '"')
        .map_or(0, |p| {
            p + before[p..].chars().next().map_or(1, char::len_utf8)
        });
    let word = before[word_start..].to_lowercase();
    if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
        return true;
    }
    ABBREVIATIONS.contains(&word.as_str())
}

fn push_trimmed(text: &str, start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        spans.push((start + lead, start + lead + trimmed.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<&str> {
        sentence_spans(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn splits_on_terminal_punctuation() {
        assert_eq!(
            sentences("Bees dance. Why? \"Food!\" They said so.  2 bees left."),
            vec![
                "Bees dance.",
                "Why?",
                "\"Food!\"",
                "They said so.",
                "2 bees left."
            ]
        );
    }

    #[test]
    fn keeps_abbreviations_initials_and_decimals_inside() {
        assert_eq!(
            sentences("Dr. Smith et al. found 3.5 mg, e.g. in J. Doe's hives. Next one."),
            vec![
                "Dr. Smith et al. found 3.5 mg, e.g. in J. Doe's hives.",
                "Next one."
            ]
        );
        assert_eq!(
            sentences("no end lowercase. after"),
            vec!["no end lowercase. after"]
        );
    }

    #[test]
    fn paragraphs_and_list_items_are_boundaries() {
        assert_eq!(
            sentences("# Title\nIntro line\n\nSecond para\n- item one\n- item two\n1. first"),
            vec![
                "# Title",
                "Intro line",
                "Second para",
                "- item one",
                "- item two",
                "1. first"
            ]
        );
        // A plain line break inside a sentence is not a boundary.
        assert_eq!(
            sentences("one sentence\ncontinues here."),
            vec!["one sentence\ncontinues here."]
        );
    }

    #[test]
    fn unicode_and_empty_text() {
        assert!(sentences("   \n\n ").is_empty());
        assert_eq!(sentences("Über café. Ça va?"), vec!["Über café.", "Ça va?"]);
    }
}
