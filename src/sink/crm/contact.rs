//! Who a chat user is in a CRM: the contact key (E.164 phone for WhatsApp users, else the
//! email attribute) and the fields sent when a contact must be created.

use crate::model::User;

/// What we know to find or create a user's contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactWant {
    /// Channel-user id.
    pub user: String,
    /// `+<digits>` for WhatsApp users (the channel-user id is the number).
    pub phone: Option<String>,
    /// The `email` attribute, lowercased and trimmed.
    pub email: Option<String>,
    /// First name (the user's name, or `Engati` when unknown).
    pub first_name: String,
    /// Last name (the rest of the name, or a placeholder: BottleCRM requires one).
    pub last_name: String,
}

impl ContactWant {
    /// The ledger key: the phone if any, else `email:<email>`.
    pub fn key(&self) -> Option<String> {
        self.phone
            .clone()
            .or_else(|| self.email.as_ref().map(|e| format!("email:{e}")))
    }
}

/// E.164 from a WhatsApp channel-user id (digits only, country code included, 8..=15 digits).
pub fn e164(channel_user_id: &str) -> Option<String> {
    let digits = channel_user_id.trim().trim_start_matches('+');
    (8..=15)
        .contains(&digits.len())
        .then_some(())
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'))
        .map(|_| format!("+{digits}"))
}

/// The digits of a phone as any CRM formats it (`+91 95654-28256` -> `+919565428256`).
pub fn normalize_phone(p: &str) -> Option<String> {
    let digits: String = p.chars().filter(char::is_ascii_digit).collect();
    e164(&digits)
}

/// The contact a user stands for (`None` for neither phone nor email: cannot be matched).
pub fn want(u: &User) -> Option<ContactWant> {
    let phone = match u.channel.as_deref() {
        Some(c) if c.eq_ignore_ascii_case("whatsapp") => e164(&u.channel_user_id),
        None => e164(&u.channel_user_id),
        _ => None,
    };
    let email = u
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("email"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .filter(|v| v.contains('@') && !v.contains(char::is_whitespace));
    if phone.is_none() && email.is_none() {
        return None;
    }
    let name = u
        .user_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let (first, last) = match name.and_then(|n| n.rsplit_once(' ')) {
        Some((f, l)) => (f.trim().to_owned(), l.trim().to_owned()),
        None => (
            name.unwrap_or("Engati").to_owned(),
            format!("({} user)", u.channel.as_deref().unwrap_or("chat")),
        ),
    };
    Some(ContactWant {
        user: u.channel_user_id.clone(),
        phone,
        email,
        first_name: first.chars().take(255).collect(),
        last_name: last.chars().take(255).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, channel: &str, name: Option<&str>, email: Option<&str>) -> User {
        User {
            channel_user_id: id.into(),
            channel: Some(channel.into()),
            user_name: name.map(Into::into),
            attributes: email
                .map(|e| vec![("email".to_string(), e.to_string())])
                .unwrap_or_default(),
            matched_filters: vec![],
        }
    }

    #[test]
    fn whatsapp_ids_are_phones_and_others_need_an_email() {
        let w = want(&user(
            "919565428256",
            "whatsapp",
            Some("Asha Rao"),
            Some(" Asha@Example.com "),
        ))
        .unwrap();
        assert_eq!(w.phone.as_deref(), Some("+919565428256"));
        assert_eq!(w.email.as_deref(), Some("asha@example.com"));
        assert_eq!(
            (w.first_name.as_str(), w.last_name.as_str()),
            ("Asha", "Rao")
        );
        assert_eq!(w.key().as_deref(), Some("+919565428256"));
        let web = want(&user(
            "3f6c-uuid",
            "web",
            Some("Ravi"),
            Some("ravi@example.com"),
        ))
        .unwrap();
        assert_eq!(web.phone, None);
        assert_eq!(web.key().as_deref(), Some("email:ravi@example.com"));
        assert_eq!(web.last_name, "(web user)");
        assert!(want(&user("3f6c-uuid", "web", None, None)).is_none());
        assert_eq!(
            normalize_phone("+91 95654-28256").as_deref(),
            Some("+919565428256")
        );
        assert_eq!(e164("12"), None);
    }
}
