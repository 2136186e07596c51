//! RAFT answers as text: quotes between `##begin_quote##` and `##end_quote##`, and the final
//! answer after `##Answer:` (or the reference scripts' `<ANSWER>:`). Quotes are checked against
//! the context after whitespace normalisation, so a quote that differs from its source only in
//! line breaks or doubled spaces is real, and one with a changed word is not.

pub const BEGIN_QUOTE: &str = "##begin_quote##";
pub const END_QUOTE: &str = "##end_quote##";
/// Answer markers, in the order they are looked for.
pub const ANSWER_MARKERS: [&str; 2] = ["##Answer:", "<ANSWER>:"];

/// Quotes shorter than this many words do not count as evidence.
pub const MIN_QUOTE_WORDS: usize = 5;

/// The decoding constraint that makes every quote a passage of one of `documents`
/// ([`crate::llm::constrain`]) that counts as evidence: the model closes a quote only once it
/// holds [`MIN_QUOTE_WORDS`] words, and a quote still open when the token budget runs out is
/// closed in time.
pub fn copy_constraint(documents: Vec<String>) -> crate::llm::constrain::CopySpans {
    crate::llm::constrain::CopySpans {
        open: BEGIN_QUOTE.into(),
        close: END_QUOTE.into(),
        sources: documents,
        min_words: MIN_QUOTE_WORDS,
        close_before_limit: true,
    }
}

/// Whitespace runs collapsed to one space, ends trimmed (the decoder's copy constraint compares
/// the same way).
pub use crate::llm::constrain::{normalize_space, word_count};

/// Every quoted span of `answer`, in order (an opening marker without its close is ignored).
pub fn quotes(answer: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = answer;
    while let Some(start) = rest.find(BEGIN_QUOTE) {
        let after = &rest[start + BEGIN_QUOTE.len()..];
        let Some(end) = after.find(END_QUOTE) else {
            break;
        };
        out.push(after[..end].trim().to_string());
        rest = &after[end + END_QUOTE.len()..];
    }
    out
}

/// The final answer: the text after the last answer marker, up to the end of its line, trimmed
/// of whitespace and trailing punctuation; `None` when there is no marker or nothing after it.
pub fn final_answer(answer: &str) -> Option<String> {
    let (at, marker) = ANSWER_MARKERS
        .iter()
        .filter_map(|m| answer.rfind(m).map(|i| (i, *m)))
        .max_by_key(|(i, _)| *i)?;
    let text = answer[at + marker.len()..]
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_end_matches(['.', '!', ';'])
        .trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// How an answer's quotes relate to its context.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuoteCheck {
    pub quotes: Vec<String>,
    /// Quotes found nowhere in the context.
    pub invented: Vec<String>,
    /// The answer has a final answer after a marker.
    pub has_answer: bool,
}

impl QuoteCheck {
    pub fn of(answer: &str, context: &str) -> Self {
        let haystack = normalize_space(context);
        let quotes = quotes(answer);
        let invented = quotes
            .iter()
            .filter(|q| {
                let q = normalize_space(q);
                q.is_empty() || !haystack.contains(&q)
            })
            .cloned()
            .collect();
        Self {
            quotes,
            invented,
            has_answer: final_answer(answer).is_some(),
        }
    }

    /// Every quote is real and there is a final answer.
    pub fn is_valid(&self) -> bool {
        self.invented.is_empty() && self.has_answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_answers_are_parsed_with_both_markers() {
        let a = "##Reason: it says ##begin_quote## bees make\nhoney ##end_quote## and \
                 ##begin_quote##wax##end_quote##. ##begin_quote## unclosed\n##Answer: SUPPORT.";
        assert_eq!(quotes(a), vec!["bees make\nhoney", "wax"]);
        assert_eq!(final_answer(a).as_deref(), Some("SUPPORT"));
        assert_eq!(
            final_answer("x <ANSWER>: 21 days").as_deref(),
            Some("21 days")
        );
        assert_eq!(final_answer("no marker here"), None);
        assert_eq!(final_answer("##Answer:   "), None);
    }

    #[test]
    fn real_quotes_pass_and_invented_ones_fail() {
        let context = "Document 1: Bees make honey\nfrom nectar.  Drones do not sting.";
        let ok = QuoteCheck::of(
            "##begin_quote##Bees make honey from   nectar.##end_quote## ##Answer: yes",
            context,
        );
        assert!(ok.is_valid(), "{ok:?}");
        let bad = QuoteCheck::of(
            "##begin_quote##Bees make jam from nectar.##end_quote## ##Answer: yes",
            context,
        );
        assert_eq!(bad.invented, vec!["Bees make jam from nectar."]);
        assert!(!bad.is_valid());
        let no_answer = QuoteCheck::of("##begin_quote##Drones do not sting.##end_quote##", context);
        assert!(no_answer.invented.is_empty() && !no_answer.is_valid());
    }
}
