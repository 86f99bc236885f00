//! A pipeline file's parse error as the user sees it, without ever showing the value of a
//! secret-looking key (`*key*`, `*token*`, `*secret*`, `*password*`): cron logs keep stderr.

/// True for key names that may hold a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "token", "secret", "password"]
        .iter()
        .any(|w| k.contains(w))
}

/// The parser's message (line, snippet, what is wrong) with the value of every secret-looking
/// key on the offending lines replaced by `****`.
pub fn describe(e: &toml::de::Error, text: &str) -> String {
    let mut msg = e.to_string().trim_end().to_owned();
    let Some(span) = e.span() else {
        return msg;
    };
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    for line in text[start..end].lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        let value = value.trim();
        if is_secret_key(key) && !value.is_empty() {
            msg = msg.replace(value, "\"****\"");
            let unquoted = value.trim_matches(|c| c == '"' || c == '\'');
            if !unquoted.is_empty() {
                msg = msg.replace(unquoted, "****");
            }
        }
    }
    if msg.contains("****") {
        msg.push_str(
            "\n(secrets never go in a pipeline file: the API key comes from ENGATI_API_KEY or api_key_file, a CRM token from its environment variable or crm_token_file)",
        );
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_secret_is_never_shown() {
        let text = "[source]\nprovider = \"engati\"\napi_key = \"3f6c0a1e-aaaa-bbbb-cccc-0123456789ab-XyZ12ab\"\n";
        let e = toml::from_str::<crate::config::PipelineFile>(text).unwrap_err();
        let msg = describe(&e, text);
        assert!(msg.contains("api_key"), "{msg}");
        assert!(!msg.contains("3f6c0a1e"), "{msg}");
        assert!(!msg.contains("XyZ12ab"), "{msg}");
        assert!(msg.contains("ENGATI_API_KEY"), "{msg}");
    }

    #[test]
    fn other_errors_keep_their_snippet() {
        let text = "[source]\nconcurency = 4\n";
        let e = toml::from_str::<crate::config::PipelineFile>(text).unwrap_err();
        let msg = describe(&e, text);
        assert!(msg.contains("concurency = 4"), "{msg}");
    }
}
