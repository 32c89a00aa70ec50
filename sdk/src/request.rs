//! Reading a request: query parameters and headers.

use crate::Request;

/// The first value of the query parameter `name`, decoded.
///
/// Keys and values are decoded as in an HTML form (`application/x-www-form-urlencoded`):
/// `%XX` escapes become bytes and `+` becomes a space. A malformed escape is
/// kept as it is and invalid UTF-8 is replaced with U+FFFD, so this never
/// fails. A key without `=` (`?verbose`) has the empty value.
///
/// ```
/// let request = berth_sdk::Request::get("/search?q=wasi+http%3F&page=2").body(()).unwrap();
/// assert_eq!(berth_sdk::query(&request, "q").as_deref(), Some("wasi http?"));
/// assert_eq!(berth_sdk::query(&request, "page").as_deref(), Some("2"));
/// assert_eq!(berth_sdk::query(&request, "lang"), None);
/// ```
pub fn query<B>(request: &Request<B>, name: &str) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| decode(key) == name)
        .map(|(_, value)| decode(value))
}

/// The first value of header `name` (any case), if it is visible ASCII.
///
/// ```
/// let request = berth_sdk::Request::get("/")
///     .header("User-Agent", "curl/8.5.0")
///     .body(())
///     .unwrap();
/// assert_eq!(berth_sdk::header(&request, "user-agent"), Some("curl/8.5.0"));
/// assert_eq!(berth_sdk::header(&request, "accept"), None);
/// ```
pub fn header<'r, B>(request: &'r Request<B>, name: &str) -> Option<&'r str> {
    request.headers().get(name)?.to_str().ok()
}

/// Form-decodes one key or value: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => match (tail.first().and_then(hex), tail.get(1).and_then(hex)) {
                (Some(high), Some(low)) => {
                    bytes.push(high << 4 | low);
                    rest = &tail[2..];
                }
                _ => bytes.push(b'%'),
            },
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(digit: &u8) -> Option<u8> {
    char::from(*digit).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("%e2%9C%93"), "\u{2713}");
        assert_eq!(
            decode("https%3A%2F%2Fexample.com%2F%3Fx%3D1"),
            "https://example.com/?x=1"
        );
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%%41"), "%A");
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn finds_the_first_matching_key() {
        let req = request("/?a=1&b=2&a=3&flag&c%20d=e&=x&");
        assert_eq!(query(&req, "a").as_deref(), Some("1"));
        assert_eq!(query(&req, "b").as_deref(), Some("2"));
        assert_eq!(query(&req, "flag").as_deref(), Some(""));
        assert_eq!(query(&req, "c d").as_deref(), Some("e"));
        assert_eq!(query(&req, "").as_deref(), Some("x"));
        assert_eq!(query(&req, "z"), None);
        assert_eq!(query(&request("/"), "a"), None);
    }

    #[test]
    fn value_may_contain_equals() {
        let req = request("/?url=http://h/?x=1");
        assert_eq!(query(&req, "url").as_deref(), Some("http://h/?x=1"));
    }
}
