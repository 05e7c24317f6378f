//! `WWW-Authenticate` challenge parsing (RFC 7235 auth-params, as registries send them).

use reqwest::Url;

/// What a registry asked for in a `401`/`403`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`: send `Authorization: Basic` on every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer(Bearer),
}

/// The parameters of a Bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bearer {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

impl Bearer {
    /// The token URL: `realm?service=…&scope=…` (properly escaped).
    pub fn token_url(&self) -> Option<Url> {
        let mut u = Url::parse(&self.realm).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        {
            let mut q = u.query_pairs_mut();
            if let Some(s) = &self.service {
                q.append_pair("service", s);
            }
            if let Some(s) = &self.scope {
                q.append_pair("scope", s);
            }
        }
        Some(u)
    }
}

/// Parse the `WWW-Authenticate` header values of a response; Bearer wins over Basic when a
/// server offers both. `None` when no value is a usable challenge.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for v in values {
        match parse_one(v) {
            Some(Challenge::Bearer(b)) => return Some(Challenge::Bearer(b)),
            Some(Challenge::Basic) => basic = true,
            None => {}
        }
    }
    basic.then_some(Challenge::Basic)
}

fn parse_one(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let realm = get("realm").filter(|r| !r.is_empty())?;
    Some(Challenge::Bearer(Bearer {
        realm,
        service: get("service"),
        scope: get("scope"),
    }))
}

/// `k=v, k="quoted, with \"escapes\""` → pairs. Tolerant: junk is skipped.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        // Skip separators.
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_ascii_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            if chars.peek().is_none() {
                return out;
            }
            chars.next();
            continue;
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            continue; // a bare token (e.g. token68) – ignore
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    _ => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key, val));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(v: &str) -> Bearer {
        match parse_challenges([v]) {
            Some(Challenge::Bearer(b)) => b,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn bearer_with_commas_inside_quotes() {
        let b = bearer(
            r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:ns/app:pull,push""#,
        );
        assert_eq!(b.realm, "https://auth.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.io"));
        assert_eq!(b.scope.as_deref(), Some("repository:ns/app:pull,push"));
        let u = b.token_url().unwrap();
        assert_eq!(
            u.as_str(),
            "https://auth.io/token?service=registry.io&scope=repository%3Ans%2Fapp%3Apull%2Cpush"
        );
    }

    #[test]
    fn bearer_variants() {
        let b = bearer(r#"bearer   Realm = "http://a/t" , service=svc,error="insufficient_scope""#);
        assert_eq!(b.realm, "http://a/t");
        assert_eq!(b.service.as_deref(), Some("svc"));
        assert_eq!(b.scope, None);
        let b = bearer(r#"Bearer realm="http://a/t?x=1",scope="a \"q\" b""#);
        assert_eq!(b.scope.as_deref(), Some(r#"a "q" b"#));
        assert_eq!(
            b.token_url().unwrap().as_str(),
            "http://a/t?x=1&scope=a+%22q%22+b"
        );
    }

    #[test]
    fn basic_and_junk() {
        assert_eq!(
            parse_challenges([r#"Basic realm="basic-realm""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenges(["basic"]), Some(Challenge::Basic));
        assert_eq!(parse_challenges(["Negotiate abc"]), None);
        assert_eq!(parse_challenges([r#"Bearer service="x""#]), None); // no realm
        assert_eq!(parse_challenges(["Bearer realm="]), None);
        assert_eq!(
            parse_challenges(["", "Bearer", "=,,=\"", "Bearer ,,,= \"\\"]),
            None
        );
        // Bearer preferred over Basic whatever the order.
        let c = parse_challenges([r#"Basic realm="r""#, r#"Bearer realm="http://t""#]);
        assert!(matches!(c, Some(Challenge::Bearer(_))));
    }

    #[test]
    fn bad_realm_gives_no_token_url() {
        let b = bearer(r#"Bearer realm="file:///etc/passwd""#);
        assert!(b.token_url().is_none());
        let b = bearer(r#"Bearer realm="not a url""#);
        assert!(b.token_url().is_none());
    }
}
