//! Constrained copying: text a model writes between two markers (RAFT's `##begin_quote##` and
//! `##end_quote##`) may only copy a passage of one of the source texts, compared after
//! whitespace normalisation. The decoder asks [`CopySpans::allows`] before taking a token and, when the
//! model's preferred tokens would leave the source, takes the next preferred one that does not;
//! when none of the likeliest tokens can continue the passage, it closes the span. Two options
//! shape how spans end: `min_words` keeps a span from closing before it holds that many words
//! (a shorter quote is no evidence), and `close_before_limit` closes a span still open when
//! only its close marker's tokens are left of the budget (a quote cut off by the limit is no
//! quote at all). A span closed because nothing else can follow may be shorter than `min_words`.
//!
//! This changes what the model says only inside an open span: every closed span is then a real
//! passage of the source, whatever the model would have written. Its reasoning and final answer
//! are still its own. Local models only: an OpenAI-compatible server cannot be steered token by
//! token.

use serde::{Deserialize, Serialize};

/// Spans between `open` and `close` must copy a passage of one of `sources`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpans {
    pub open: String,
    pub close: String,
    /// The texts spans copy from (the documents the model reads); a span lies within one.
    pub sources: Vec<String>,
    /// A span may close by the model's choice only once it holds at least this many words.
    #[serde(default)]
    pub min_words: usize,
    /// A span still open when the token budget has room for just its close marker is closed.
    #[serde(default)]
    pub close_before_limit: bool,
}

/// Candidate tokens tried, in the model's order of preference, before a span is closed.
pub const MAX_TRIES: usize = 64;

impl CopySpans {
    /// The check against one source, prepared once per answer.
    pub fn checker(&self) -> SpanChecker<'_> {
        SpanChecker {
            spans: self,
            sources: self.sources.iter().map(|s| normalize_space(s)).collect(),
        }
    }
}

/// [`CopySpans`] with its sources normalised.
pub struct SpanChecker<'a> {
    spans: &'a CopySpans,
    sources: Vec<String>,
}

impl SpanChecker<'_> {
    /// Whether `text` (a whole output so far) keeps its last span a passage of a source: there
    /// is no span, the last span is closed and its text occurs in a source, or it is open and its
    /// text (less a started close marker) occurs in a source. A span closed, or being closed,
    /// must hold `min_words` words. Spans are read as the quote parser reads them: from an open
    /// marker to the first close marker after it, so an open marker inside a span is part of
    /// its text.
    pub fn allows(&self, text: &str) -> bool {
        let closable = |body: &str| self.copies(body) && self.long_enough(body);
        match self.last_span(text) {
            None => true,
            Some((span, true)) => closable(span),
            Some((open, false)) => {
                let close = self.spans.close.as_str();
                self.copies(open)
                    || (1..close.len().min(open.len()) + 1)
                        .filter(|&k| open.is_char_boundary(open.len() - k))
                        .any(|k| {
                            let (body, tail) = open.split_at(open.len() - k);
                            close.starts_with(tail) && closable(body)
                        })
            }
        }
    }

    /// The text of `text`'s span that is open at its end, or `None`.
    pub fn open_span<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.last_span(text)
            .and_then(|(span, closed)| (!closed).then_some(span))
    }

    /// `text`'s last span and whether it is closed.
    fn last_span<'t>(&self, text: &'t str) -> Option<(&'t str, bool)> {
        let (open, close) = (self.spans.open.as_str(), self.spans.close.as_str());
        let (mut rest, mut last) = (text, None);
        while let Some(at) = rest.find(open) {
            let after = &rest[at + open.len()..];
            match after.find(close) {
                Some(end) => {
                    last = Some((&after[..end], true));
                    rest = &after[end + close.len()..];
                }
                None => return Some((after, false)),
            }
        }
        last
    }

    fn long_enough(&self, span: &str) -> bool {
        word_count(span) >= self.spans.min_words
    }

    fn copies(&self, span: &str) -> bool {
        let span = normalize_space(span);
        span.is_empty() || self.sources.iter().any(|s| s.contains(&span))
    }
}

/// Whitespace runs collapsed to one space, ends trimmed: how spans and quotes are compared
/// (`raft::quotes` checks quotes with it too).
pub fn normalize_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words as quotes are counted (`min_words` here, the evaluation's shortest quote in
/// `raft::quotes`).
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans() -> CopySpans {
        CopySpans {
            open: "##begin_quote##".into(),
            close: "##end_quote##".into(),
            sources: vec![
                "Document 1: Worker bees live\nabout six weeks in summer. #5 is a hive.".into(),
                "Document 2: Drones die in autumn.".into(),
            ],
            min_words: 0,
            close_before_limit: false,
        }
    }

    #[test]
    fn open_spans_must_copy_the_source() {
        let s = spans();
        let c = s.checker();
        assert!(c.allows("free text, no quote: anything goes"));
        assert!(c.allows("It says ##begin_quote##"));
        assert!(c.allows("It says ##begin_quote## Worker bees"));
        // A line break in the source is a space.
        assert!(c.allows("It says ##begin_quote## Worker bees live about six"));
        assert!(!c.allows("It says ##begin_quote## Worker bees live about seven"));
        assert!(!c.allows("It says ##begin_quote## Drones live"));
        assert!(c.allows("It says ##begin_quote## Drones die"));
        // A span lies within one source.
        assert!(!c.allows("##begin_quote## a hive. Document 2"));
        // Closing: a started close marker after a real passage, then the whole marker.
        assert!(c.allows("##begin_quote## six weeks in summer. #"));
        assert!(c.allows("##begin_quote## six weeks in summer. ##end_qu"));
        assert!(c.allows("##begin_quote## six weeks in summer. ##end_quote##"));
        assert!(!c.allows("##begin_quote## six months ##end_qu"));
        // A '#' the source has is copied, not taken for the close marker.
        assert!(c.allows("##begin_quote## summer. #5 is"));
        // After a closed span the text is free again; a later span is checked on its own.
        assert!(c.allows("##begin_quote##bees live##end_quote## so they die young"));
        assert!(!c.allows("##begin_quote##bees live##end_quote## and ##begin_quote## they die"));
        // A span closes only on a copy; a stray piece of the marker inside it does not pass.
        assert!(!c.allows("##begin_quote## six months ##end_quote##"));
        assert!(!c.allows("##begin_quote## six weeks # ##end_quote##"));
        // An open marker inside a span is text of the span, as the quote parser reads it.
        assert!(!c.allows("##begin_quote## six weeks ##begin_quote## in summer"));
        assert_eq!(c.open_span("a ##begin_quote## b"), Some(" b"));
        assert_eq!(c.open_span("a ##begin_quote## b ##end_quote##"), None);
    }

    #[test]
    fn spans_close_only_once_they_hold_min_words() {
        let s = CopySpans {
            min_words: 3,
            ..spans()
        };
        let c = s.checker();
        // Open spans of any length may grow.
        assert!(c.allows("##begin_quote## Worker"));
        assert!(c.allows("##begin_quote## Worker bees"));
        // Closing, or starting to close, needs three words.
        assert!(!c.allows("##begin_quote## Worker bees ##end_quote##"));
        assert!(!c.allows("##begin_quote## Worker bees ##end_q"));
        assert!(!c.allows("##begin_quote## Worker bees #"));
        assert!(c.allows("##begin_quote## Worker bees live ##end_q"));
        assert!(c.allows("##begin_quote## Worker bees live ##end_quote## then free"));
        // Words are counted after whitespace normalisation, and a copy is still required.
        assert!(c.allows("##begin_quote##\n Worker\n bees  live##end_quote##"));
        assert!(!c.allows("##begin_quote## Worker bees die ##end_quote##"));
        // A '#' the source has continues the copy rather than closing it.
        assert!(c.allows("##begin_quote## summer. #"));
    }
}
