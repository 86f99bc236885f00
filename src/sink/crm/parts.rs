//! Cutting a transcript into CRM bodies of at most so many characters (BottleCRM 10,000,
//! HubSpot 65,536), losing nothing that fits: each part is filled before the next one starts;
//! a message too long for the room left continues into the next part (marked `…` at the cut
//! and `(continued)` where it resumes); a short message that does not fit starts the next part
//! whole. Only past [`MAX_PARTS`] parts is the rest cut, with a marker saying how much.

use super::session::Style;

/// Parts per session at most; what does not fit in them is cut with a marker.
pub const MAX_PARTS: usize = 20;
/// A message at most this long (in body characters) is never split: if it does not fit in the
/// room left, it starts the next part.
const SPLIT_MIN: usize = 200;
/// Room (body characters) below which a part is closed rather than given a piece of a message.
const MIN_ROOM: usize = 100;
/// Where a message is cut and where it resumes.
const CUT: &str = " … (continues in the next part)";
const RESUME: &str = "(continued) ";

/// Characters a piece of text costs in the body of `style` (HTML escapes `&`, `<`, `>`, and
/// each line is a `<p>` element; a plain line ends with a newline).
fn cost(style: Style, text: &str) -> usize {
    match style {
        Style::Plain => text.chars().count() + 1,
        Style::Html => {
            7 + text
                .chars()
                .map(|c| match c {
                    '&' => 5,
                    '<' | '>' => 4,
                    _ => 1,
                })
                .sum::<usize>()
        }
    }
}

/// The longest prefix of `text` costing at most `room` (never splitting a character).
fn prefix_within(style: Style, text: &str, room: usize) -> &str {
    let mut spent = cost(style, "");
    for (i, c) in text.char_indices() {
        spent += cost(style, c.encode_utf8(&mut [0; 4])) - cost(style, "");
        if spent > room {
            return &text[..i];
        }
    }
    text
}

/// Packs transcript lines into parts of at most `budget` characters each (the header's room
/// already taken out). Returns the lines of each part, as plain text (escaping is the
/// renderer's).
pub fn pack(lines: Vec<String>, style: Style, budget: usize) -> Vec<Vec<String>> {
    let mut parts: Vec<Vec<String>> = vec![Vec::new()];
    let mut used = 0usize;
    'lines: for line in lines {
        let mut rest = line.as_str();
        let mut prefix = "";
        loop {
            let piece = format!("{prefix}{rest}");
            let room = budget.saturating_sub(used);
            let need = cost(style, &piece);
            if need <= room {
                used += need;
                parts.last_mut().expect("never empty").push(piece);
                continue 'lines;
            }
            let part_empty = parts.last().is_none_or(Vec::is_empty);
            let last_part = parts.len() >= MAX_PARTS;
            if !part_empty && !last_part && (need <= SPLIT_MIN.max(budget / 50) || room < MIN_ROOM)
            {
                parts.push(Vec::new());
                used = 0;
                continue;
            }
            if last_part {
                // Past the cap: keep what fits, say what was cut, drop the rest.
                let note = format!(" … [truncated: {} more characters]", rest.chars().count());
                let head = prefix_within(
                    style,
                    rest,
                    room.saturating_sub(cost(style, &format!("{prefix}{note}"))),
                );
                let cut = rest.chars().count() - head.chars().count();
                let note = format!(" … [truncated: {cut} more characters]");
                parts
                    .last_mut()
                    .expect("never empty")
                    .push(format!("{prefix}{head}{note}"));
                return parts;
            }
            let head = prefix_within(
                style,
                rest,
                room.saturating_sub(cost(style, &format!("{prefix}{CUT}"))),
            );
            parts
                .last_mut()
                .expect("never empty")
                .push(format!("{prefix}{head}{CUT}"));
            rest = &rest[head.len()..];
            prefix = RESUME;
            parts.push(Vec::new());
            used = 0;
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_chars(style: Style, part: &[String]) -> usize {
        part.iter().map(|l| cost(style, l)).sum()
    }

    #[test]
    fn parts_fill_before_the_next_starts_and_long_messages_continue() {
        let lines = vec!["a".repeat(300), "B".repeat(20_000), "c".repeat(400)];
        let parts = pack(lines, Style::Plain, 9_740);
        assert_eq!(
            parts.len(),
            3,
            "{:?}",
            parts
                .iter()
                .map(|p| body_chars(Style::Plain, p))
                .collect::<Vec<_>>()
        );
        for p in &parts {
            assert!(body_chars(Style::Plain, p) <= 9_740);
        }
        assert!(
            body_chars(Style::Plain, &parts[0]) > 9_600,
            "the first part is filled"
        );
        assert!(
            body_chars(Style::Plain, &parts[1]) > 9_600,
            "so is the second"
        );
        let text: String = parts.concat().concat();
        assert_eq!(
            text.matches('B').count(),
            20_000,
            "nothing of the long message is lost"
        );
        assert!(parts[0][1].ends_with(CUT) && parts[1][0].starts_with(RESUME));
        assert_eq!(parts[2].last().unwrap(), &"c".repeat(400));
    }

    #[test]
    fn short_messages_are_never_split() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("{i:03} {}", "x".repeat(96)))
            .collect();
        let parts = pack(lines, Style::Html, 5_000);
        for p in &parts {
            assert!(body_chars(Style::Html, p) <= 5_000);
            assert!(p.iter().all(|l| !l.contains(CUT) && !l.starts_with(RESUME)));
        }
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 200);
    }

    #[test]
    fn html_escapes_count_against_the_limit() {
        let parts = pack(vec!["<&>".repeat(3_000)], Style::Html, 4_000);
        for p in &parts {
            assert!(body_chars(Style::Html, p) <= 4_000);
        }
        let kept: String = parts.concat().concat();
        for c in ['<', '&', '>'] {
            assert_eq!(kept.matches(c).count(), 3_000, "every {c} kept");
        }
    }

    #[test]
    fn only_past_the_cap_is_anything_cut_and_the_cut_is_counted() {
        let parts = pack(vec!["z".repeat(300_000)], Style::Plain, 9_740);
        assert_eq!(parts.len(), MAX_PARTS);
        let last = parts.last().unwrap().last().unwrap();
        let kept = parts.concat().concat().matches('z').count();
        assert!(
            last.contains(&format!("[truncated: {} more characters]", 300_000 - kept)),
            "{}",
            &last[last.len() - 60..]
        );
        assert!(body_chars(Style::Plain, parts.last().unwrap()) <= 9_740);
    }
}
