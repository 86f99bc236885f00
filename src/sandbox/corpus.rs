//! The vendored conversation corpus (`corpus.jsonl`, built by `tools/corpus/build_corpus.py`).
//!
//! 1,089 real conversations: 450 English human chats from `chitchat-dataset` 0.9.0 (MIT) with
//! their real timing, and 639 short conversations in 28 languages from `chatterbot-corpus`
//! 1.3.3 (BSD). Licences and provenance: `CORPUS_LICENSE.md` beside this file.

use std::sync::LazyLock;

use serde::Deserialize;

/// One corpus conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    /// `chitchat` or `chatterbot`.
    pub src: String,
    /// ISO 639-1 language code (or the source's folder name).
    pub lang: String,
    /// Turns: (speaker 0 = opener / end user, 1 = the other party; offset ms from the first
    /// message; text).
    pub turns: Vec<(u8, u64, String)>,
}

static CORPUS: LazyLock<Vec<Conversation>> = LazyLock::new(|| {
    include_str!("corpus.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus.jsonl lines are valid (checked by tests)"))
        .collect()
});

/// All conversations, parsed once.
pub fn conversations() -> &'static [Conversation] {
    &CORPUS
}

#[cfg(test)]
mod tests {
    #[test]
    fn corpus_parses_and_is_multilingual() {
        let c = super::conversations();
        assert!(c.len() > 1000);
        let langs: std::collections::HashSet<_> = c.iter().map(|c| c.lang.as_str()).collect();
        for l in ["en", "hi", "ta", "ur", "zh", "ja"] {
            assert!(langs.contains(l), "missing {l}");
        }
        assert!(c.iter().all(|c| !c.turns.is_empty()));
    }
}
