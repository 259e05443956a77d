//! Credentials never reach a log line, an error, the stats, the metrics or the metadata: a URL's
//! password is shown as `***` (`rtsp://user:***@cam/stream`), and every secret this process
//! was given is masked wherever else it would appear (a GStreamer message quoting a URL).

use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remember `s` as a secret: [`line`] masks it from now on.
pub fn secret(s: &str) {
    if s.is_empty() {
        return;
    }
    if let Ok(mut list) = SECRETS.lock() {
        if !list.iter().any(|x| x == s) {
            list.push(s.to_owned());
        }
    }
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…` (the password also becomes a
/// secret); anything else unchanged.
pub fn uri(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return s.to_owned();
    };
    let userinfo = &rest[..at];
    let Some((user, password)) = userinfo.split_once(':') else {
        return s.to_owned();
    };
    secret(password);
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// `text` with every URL's password and every remembered secret masked.
pub fn line(text: &str) -> String {
    let mut out: String = text
        .split(' ')
        .map(|w| {
            if w.contains("://") {
                uri(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Ok(list) = SECRETS.lock() {
        for s in list.iter() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            uri("rtsp://admin:hunter2@10.0.0.5:554/stream1"),
            "rtsp://admin:***@10.0.0.5:554/stream1"
        );
        assert_eq!(uri("rtsp://10.0.0.5/a@b"), "rtsp://10.0.0.5/a@b");
        assert_eq!(uri("/clips/a.mp4"), "/clips/a.mp4");
        assert_eq!(
            line("cannot open rtsp://u:hunter2@cam/x: refused (hunter2)"),
            "cannot open rtsp://u:***@cam/x: refused (***)"
        );
    }
}
