//! What a camera is, as the API and the database hold it, and its validation at the edge.

use serde::{Deserialize, Serialize};

use crate::analytics::geometry::Geometry;

/// Camera and line ids: short, safe in Redis keys, URLs and metric labels.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// RTP interleaved in the RTSP TCP connection: passes NAT and firewalls, no packet loss.
    #[default]
    Tcp,
    Udp,
}

/// How a recorded file is played as a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayOptions {
    /// Start again at the end instead of ending the stream.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// Play at the file's own frame rate like a live camera (frames may then be dropped when the
    /// device is saturated). `false`: as fast as the device takes frames, none dropped.
    pub realtime: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { looping: false, realtime: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// rtsp://, rtsps://, http://, https:// or file:// (absolute path). May carry credentials,
    /// which are stored but never logged or returned.
    pub url: String,
    /// Frames per second to analyse; default `cameras.default_fps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Lines, zones, lanes, exclusions and calibration (`docs/ANALYTICS.md`); replaced at run
    /// time with `PUT /api/v1/cameras/{id}/geometry`, each change a new version.
    #[serde(default)]
    pub geometry: Geometry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtsp_transport: Option<RtspTransport>,
    /// Only for file:// sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Network,
    File,
}

impl CameraSpec {
    /// Every problem with the camera, each a sentence an operator can act on. Never echoes the URL.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !is_valid_id(&self.id) {
            errors.push("id must be 1-64 characters of A-Z a-z 0-9 _ -".to_string());
        }
        if self.name.len() > 200 {
            errors.push("name is longer than 200 characters".into());
        }
        if self.name.chars().any(char::is_control) || self.url.chars().any(char::is_control) {
            errors.push("name and url must not contain control characters".into());
        }
        match self.source_kind() {
            Ok(kind) => {
                if kind == SourceKind::File {
                    match self.file_path() {
                        Some(path) if path.is_file() => {}
                        Some(_) => errors.push("url: file not found".into()),
                        None => errors.push("url: a file:// URL needs an absolute path".into()),
                    }
                    if self.rtsp_transport.is_some() {
                        errors.push("rtsp_transport applies to rtsp:// and rtsps:// URLs only".into());
                    }
                } else {
                    if self.replay.is_some() {
                        errors.push("replay applies to file:// URLs only".into());
                    }
                    if self.rtsp_transport.is_some() && !self.url.starts_with("rtsp") {
                        errors.push("rtsp_transport applies to rtsp:// and rtsps:// URLs only".into());
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if let Some(fps) = self.fps {
            if !(fps > 0.0 && fps <= 120.0) {
                errors.push("fps must be in (0, 120]".into());
            }
        }
        errors.extend(self.geometry.validate().into_iter().map(|e| format!("geometry: {e}")));
        errors
    }

    pub fn source_kind(&self) -> Result<SourceKind, String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("url is not a valid URL ({e})"))?;
        match url.scheme() {
            "rtsp" | "rtsps" | "http" | "https" if url.host_str().is_some() => Ok(SourceKind::Network),
            "rtsp" | "rtsps" | "http" | "https" => Err("url needs a host".into()),
            "file" => Ok(SourceKind::File),
            other => Err(format!(
                "url scheme {other:?} is not supported (use rtsp, rtsps, http, https or file)"
            )),
        }
    }

    /// The local path of a file:// URL.
    pub fn file_path(&self) -> Option<std::path::PathBuf> {
        url::Url::parse(&self.url).ok()?.to_file_path().ok()
    }

    pub fn replay_options(&self) -> ReplayOptions {
        self.replay.unwrap_or_default()
    }

    /// The camera as the API shows it: the URL without its password.
    pub fn redacted(&self) -> CameraSpec {
        CameraSpec { url: redact_url(&self.url), ..self.clone() }
    }
}

/// Query parameters that carry credentials on common cameras (`?user=admin&pwd=...`,
/// `?token=...`), matched on the lower-cased parameter name.
const SECRET_QUERY_KEYS: [&str; 8] = ["pass", "pwd", "token", "key", "auth", "sig", "secret", "cred"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS.iter().any(|k| key.contains(k))
}

/// The secrets a URL carries: its password and the values of credential-like query parameters.
pub fn url_secrets(raw: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(raw) else { return Vec::new() };
    let mut secrets: Vec<String> = url.password().filter(|p| !p.is_empty()).map(str::to_string).into_iter().collect();
    secrets.extend(url.query_pairs().filter(|(k, v)| is_secret_key(k) && !v.is_empty()).map(|(_, v)| v.into_owned()));
    secrets
}

/// A URL safe to log or return: the password and credential-like query values replaced by
/// `***`. Unparseable input is withheld entirely, since it might still hold a secret.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) { "***".to_string() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> CameraSpec {
        CameraSpec {
            id: "cam-1".into(),
            name: String::new(),
            url: url.into(),
            fps: None,
            geometry: Geometry::default(),
            rtsp_transport: None,
            replay: None,
        }
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(redact_url("rtsp://admin:s3cret@10.0.0.5:554/live"), "rtsp://admin:***@10.0.0.5:554/live");
        assert_eq!(redact_url("rtsp://10.0.0.5/live"), "rtsp://10.0.0.5/live");
        assert_eq!(redact_url("not a url with s3cret"), "<unparseable url>");
        let q = redact_url("http://cam.example/snap.cgi?user=admin&pwd=s3cret&Token=abc&res=720");
        assert_eq!(q, "http://cam.example/snap.cgi?user=admin&pwd=***&Token=***&res=720");
        assert_eq!(url_secrets("rtsp://u:p4ss@h/x?auth_key=k3y&fps=5"), vec!["p4ss".to_string(), "k3y".to_string()]);
        let s = spec("rtsp://u:s3cret@host/x").redacted();
        assert!(!serde_json::to_string(&s).unwrap().contains("s3cret"));
    }

    #[test]
    fn unsupported_schemes_are_rejected_without_echoing_the_url() {
        for url in ["ftp://u:s3cret@h/x", "concat:a|b", "pipe:0", "data:,x"] {
            let errors = spec(url).validate();
            assert_eq!(errors.len(), 1, "{url}: {errors:?}");
            assert!(!errors[0].contains("s3cret"));
        }
        assert!(spec("rtsp://cam.example/live").validate().is_empty());
        assert!(spec("file:///definitely/not/here.avi").validate()[0].contains("not found"));
    }

    #[test]
    fn options_must_fit_the_source() {
        let mut s = spec("rtsp://cam.example/live");
        s.replay = Some(ReplayOptions::default());
        assert_eq!(s.validate(), vec!["replay applies to file:// URLs only".to_string()]);
        let mut s = spec("http://cam.example/live");
        s.rtsp_transport = Some(RtspTransport::Udp);
        assert_eq!(s.validate().len(), 1);
    }

    #[test]
    fn control_characters_are_refused() {
        let mut s = spec("rtsp://cam.example/live");
        s.name = "gate\u{0}1".into();
        assert_eq!(s.validate().len(), 1);
    }

    #[test]
    fn ids_and_fps_are_checked_together() {
        let mut s = spec("rtsp://cam.example/live");
        s.id = "bad id".into();
        s.fps = Some(0.0);
        assert_eq!(s.validate().len(), 2);
    }
}
