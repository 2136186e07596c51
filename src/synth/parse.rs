//! Queries out of an LLM's free text: one per line, with numbering, bullets, `Query 1:` labels,
//! quotes and markdown emphasis stripped; preambles ("Here are …:"), empty lines, duplicates,
//! one-word fragments and queries that copy the passage dropped.

use std::collections::HashSet;

/// The queries in `answer`, in order, at most `limit`.
pub fn parse_queries(answer: &str, passage: &str, limit: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in answer.lines() {
        let Some(q) = clean_line(line) else { continue };
        let words = q.split_whitespace().count();
        if !(2..=40).contains(&words) || copies_passage(&q, passage) {
            continue;
        }
        if seen.insert(normalize(&q)) {
            out.push(q);
        }
        if out.len() == limit {
            break;
        }
    }
    out
}

fn clean_line(line: &str) -> Option<String> {
    let mut s = line.trim();
    // Bullets and numbering: "1.", "2)", "(3)", "-", "*", "•", "Q1:", "Query 2:".
    loop {
        let before = s;
        s = s.trim_start_matches(['-', '*', '•', '·']).trim_start();
        let digits = s
            .trim_start_matches('(')
            .trim_start_matches(|c: char| c.is_ascii_digit());
        if digits.len() < s.trim_start_matches('(').len() {
            if let Some(rest) = digits.strip_prefix(['.', ')', ':']) {
                s = rest.trim_start();
            }
        }
        for label in ["query", "question", "q"] {
            if s.len() > label.len() && s[..label.len()].eq_ignore_ascii_case(label) {
                let rest =
                    s[label.len()..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
                if let Some(rest) = rest.strip_prefix([':', '.', ')']) {
                    s = rest.trim_start();
                }
            }
        }
        if s == before {
            break;
        }
    }
    let s = s.trim_matches(|c: char| {
        matches!(c, '"' | '\'' | '*' | '`' | '“' | '”' | '_') || c.is_whitespace()
    });
    if s.is_empty() || s.ends_with(':') {
        return None;
    }
    // A short label before a colon ("Answer:", "AQUA:") is not part of the query.
    let s = match s.split_once(": ") {
        Some((label, rest)) if label.split_whitespace().count() == 1 && label.len() <= 12 => {
            rest.trim()
        }
        _ => s,
    };
    let lower = s.to_lowercase();
    // Talk about the task rather than a query.
    if [
        "here are",
        "here is",
        "sure",
        "certainly",
        "queries:",
        "questions:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
        || [
            "the passage",
            "the text",
            "the article",
            "this article",
            "search quer",
            "this text",
            "answers:",
            "answer:",
        ]
        .iter()
        .any(|p| lower.contains(p))
    {
        return None;
    }
    // At least two words of letters.
    if s.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count()
        < 2
    {
        return None;
    }
    Some(s.to_string())
}

fn normalize(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when the query is lifted from the passage: six or more words found verbatim in it, or
/// most of its word 4-grams occurring in it.
pub fn copies_passage(query: &str, passage: &str) -> bool {
    let (q, p) = (normalize(query), normalize(passage));
    let q_words: Vec<&str> = q.split_whitespace().collect();
    if q_words.len() >= 6 && format!(" {p} ").contains(&format!(" {q} ")) {
        return true;
    }
    if q_words.len() < 8 {
        return false;
    }
    let p_words: Vec<&str> = p.split_whitespace().collect();
    let p_grams: HashSet<&[&str]> = p_words.windows(4).collect();
    let q_grams: Vec<&[&str]> = q_words.windows(4).collect();
    let shared = q_grams.iter().filter(|g| p_grams.contains(*g)).count();
    shared * 5 >= q_grams.len() * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "The queen mates early in life during one or a few mating flights and stores the sperm in her spermatheca.";

    #[test]
    fn strips_numbering_bullets_labels_and_quotes() {
        let answer = "Here are 4 queries:\n1. How often does a queen mate?\n2) \"where is sperm stored in a queen\"\n- **queen bee mating flights**\nQuery 4: spermatheca function\n\n";
        assert_eq!(
            parse_queries(answer, PASSAGE, 10),
            vec![
                "How often does a queen mate?",
                "where is sperm stored in a queen",
                "queen bee mating flights",
                "spermatheca function",
            ]
        );
    }

    #[test]
    fn drops_duplicates_fragments_and_copies() {
        let answer = "queen mating\nQueen  mating!\nbees\nThe queen mates early in life during one or a few mating flights\nhow long does sperm last in a queen";
        assert_eq!(
            parse_queries(answer, PASSAGE, 10),
            vec!["queen mating", "how long does sperm last in a queen"]
        );
    }

    #[test]
    fn stops_at_the_limit() {
        assert_eq!(parse_queries("a b\nc d\ne f", PASSAGE, 2).len(), 2);
    }

    #[test]
    fn near_copies_are_caught_by_shared_ngrams() {
        assert!(copies_passage(
            "queen mates early in life during one or a few mating flights?",
            PASSAGE
        ));
        assert!(!copies_passage(
            "why does the queen store sperm after her mating flights",
            PASSAGE
        ));
    }
}
