//! What a camera is, as the API and the database hold it, and its validation at the edge.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analytics::geometry::Geometry;
use crate::detector::simulated::{SimulatedCamera, SCHEME as SIMULATED_SCHEME};
use crate::ids::is_valid_id;

/// The network protocols FFmpeg may use underneath an accepted network URL (an HLS playlist or
/// an HTTP redirect cannot reach `file:`, `concat:`, `pipe:` and the like).
pub const NETWORK_PROTOCOLS: &str = "tcp,udp,rtp,srtp,rtsp,rtsps,tls,http,https,httpproxy,crypto";
const OUTSIDE_MEDIA_DIR: &str = "url: local files are accepted only under cameras.media_dir";

/// The container formats FFmpeg may read from a local file camera (its demuxer names): video
/// files, never playlists (`hls`), concat scripts or other formats that name further files.
pub const FILE_FORMATS: &str = "avi,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,flv,h264,hevc,mjpeg,asf";

/// The only protocol FFmpeg may use for a local file camera.
pub const FILE_PROTOCOLS: &str = "file";

/// Why a build without the `ffmpeg` feature refuses a camera that needs decoding.
pub const NO_FFMPEG: &str = "url: this build has no FFmpeg: only raw:// and sim:// cameras";

/// The URL scheme of a raw-frame camera (`RawFrames`).
pub const RAW_SCHEME: &str = "raw";
/// Largest width and height of a raw frame.
pub const RAW_MAX_SIDE: u32 = 8192;

/// A raw-frame camera, for benchmarks on hosts without FFmpeg:
/// `raw:///ABS/PATH?width=W&height=H&fps=F` is a file of concatenated packed BGR24 frames of
/// W x H, played in a loop at F frames per second in real time like a live camera (default 30).
/// The file lies under `cameras.media_dir` like a file:// camera's.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrames {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// The source's own frame rate (the camera's `fps` samples it down).
    pub fps: f64,
}

impl RawFrames {
    /// `None` for a URL of another scheme; otherwise the source or what is wrong with the URL
    /// (never quoting it).
    pub fn from_url(raw: &str) -> Option<Result<Self, String>> {
        let url = url::Url::parse(raw).ok().filter(|u| u.scheme() == RAW_SCHEME)?;
        Some(Self::parse(&url))
    }

    fn parse(url: &url::Url) -> Result<Self, String> {
        const FORM: &str = "url: a raw:// URL is raw:///ABS/PATH?width=W&height=H[&fps=F]";
        if url.host_str().is_some_and(|h| !h.is_empty()) || url.port().is_some() || !url.username().is_empty() {
            return Err(FORM.into());
        }
        let path = url.to_file_path().map_err(|_| FORM.to_string())?;
        let (mut width, mut height, mut fps) = (None, None, 30.0);
        for (key, value) in url.query_pairs() {
            let side = || value.parse::<u32>().ok().filter(|v| (1..=RAW_MAX_SIDE).contains(v));
            match key.as_ref() {
                "width" => width = Some(side().ok_or(format!("url: raw width must be 1-{RAW_MAX_SIDE}"))?),
                "height" => height = Some(side().ok_or(format!("url: raw height must be 1-{RAW_MAX_SIDE}"))?),
                "fps" => {
                    fps = value
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && *f <= 240.0)
                        .ok_or("url: raw fps must be in (0, 240]")?
                }
                _ => return Err(FORM.into()),
            }
        }
        match (width, height) {
            (Some(width), Some(height)) => Ok(Self { path, width, height, fps }),
            _ => Err(FORM.into()),
        }
    }

    /// Bytes of one frame in the file.
    pub fn frame_len(&self) -> u64 {
        3 * self.width as u64 * self.height as u64
    }
}

/// Which camera URLs the service accepts: `cameras.allowed_schemes` for network cameras, and
/// local files only under `cameras.media_dir`, or, while the simulator runs, only simulated
/// cameras (`sim://`). Everything else (`concat:`, `subfile:`, `pipe:`, `data:`, `exec:`, files
/// elsewhere) is refused at the edge.
#[derive(Debug, Clone)]
pub struct SourcePolicy {
    /// Lower-case network schemes, a subset of rtsp, rtsps, http, https.
    pub network_schemes: Vec<String>,
    /// The directory file cameras must lie under, as configured (made absolute) and as its real
    /// path; `None` refuses every local file.
    pub media_dir: Option<MediaDir>,
    /// `simulator.enabled`: `sim://` cameras only (the synthetic detector sees nothing in video);
    /// otherwise no `sim://` camera.
    pub simulated: bool,
}

#[derive(Debug, Clone)]
pub struct MediaDir {
    pub configured: PathBuf,
    pub canonical: PathBuf,
}

impl MediaDir {
    /// The directory `dir` (relative to the working directory); it must exist.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let canonical = dir.canonicalize()?;
        let configured = std::env::current_dir()?.join(dir);
        Ok(Self { configured, canonical })
    }
}

impl SourcePolicy {
    /// The schemes a network camera may use at all; `cameras.allowed_schemes` picks among them.
    pub const NETWORK_SCHEMES: [&'static str; 4] = ["rtsp", "rtsps", "http", "https"];

    /// For the command line (`analyze`), where the operator names a local file directly.
    pub fn any_local_file() -> Self {
        let root = MediaDir { configured: PathBuf::from("/"), canonical: PathBuf::from("/") };
        let network_schemes = Self::NETWORK_SCHEMES.map(str::to_string).to_vec();
        Self { network_schemes, media_dir: Some(root), simulated: false }
    }

    /// This policy while the simulator runs (`enabled`) or not.
    pub fn with_simulator(self, enabled: bool) -> Self {
        Self { simulated: enabled, ..self }
    }

    /// Whether `path`, as written, lies under the media directory as configured or as its real
    /// path, component by component.
    fn admits_written(&self, path: &Path) -> bool {
        self.media_dir.as_ref().is_some_and(|dir| path.starts_with(&dir.configured) || path.starts_with(&dir.canonical))
    }

    /// Whether `real`, a resolved path, lies under the media directory's real path.
    fn admits_real(&self, real: &Path) -> bool {
        self.media_dir.as_ref().is_some_and(|dir| real.starts_with(&dir.canonical))
    }
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
    /// Frames of the file skipped (decoded, not analysed) before the first one analysed, on the
    /// first opening only: `bench --cameras` starts each camera at its own point of one clip.
    /// Not part of the API (never read from or written to JSON); at most `MAX_START_FRAME`.
    #[serde(skip)]
    pub start_frame: u64,
}

/// Largest `ReplayOptions::start_frame`: ten minutes at 120 frames/s.
pub const MAX_START_FRAME: u64 = 72_000;

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { looping: false, realtime: true, start_frame: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// rtsp://, rtsps://, http://, https:// (as `cameras.allowed_schemes` allows) or file://
    /// (absolute path under `cameras.media_dir`). May carry credentials, which are stored but
    /// never logged or returned.
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
    /// `sim://NAME?crossings_per_min=R`: synthetic vehicles, no video (`detector::simulated`).
    Simulated,
    /// `raw:///PATH?width=W&height=H&fps=F`: raw BGR24 frames from a file, no decoding (`RawFrames`).
    Raw,
}

impl CameraSpec {
    /// Every problem with the camera, each a sentence an operator can act on. Never echoes the URL.
    pub fn validate(&self, policy: &SourcePolicy) -> Vec<String> {
        let mut errors = Vec::new();
        if !is_valid_id(&self.id) {
            errors.push("id must be 1-64 characters of A-Z a-z 0-9 _ -".to_string());
        }
        if self.name.chars().count() > 200 {
            errors.push("name is longer than 200 characters".into());
        }
        if self.name.chars().any(char::is_control) || self.url.chars().any(char::is_control) {
            errors.push("name and url must not contain control characters".into());
        }
        match self.source_kind() {
            Ok(kind) => {
                match kind {
                    SourceKind::Simulated if !policy.simulated => {
                        errors.push("url: sim:// cameras run only while simulator.enabled is true".into())
                    }
                    SourceKind::Simulated => {
                        if let Some(Err(e)) = SimulatedCamera::from_url(&self.url) {
                            errors.push(e);
                        }
                    }
                    _ if policy.simulated => errors.push(
                        "url: only sim:// cameras run while simulator.enabled is true (the synthetic detector sees \
                         nothing in video)"
                            .into(),
                    ),
                    _ => {}
                }
                if !cfg!(feature = "ffmpeg") && matches!(kind, SourceKind::Network | SourceKind::File) {
                    errors.push(NO_FFMPEG.into());
                }
                if kind == SourceKind::Raw {
                    if let Some(Err(e)) = RawFrames::from_url(&self.url) {
                        errors.push(e);
                    }
                }
                if kind == SourceKind::Network {
                    let scheme = self.url.split(':').next().unwrap_or_default().to_ascii_lowercase();
                    if !policy.network_schemes.contains(&scheme) {
                        errors.push(format!("url scheme {scheme:?} is not allowed here (cameras.allowed_schemes)"));
                    }
                }
                if matches!(kind, SourceKind::File | SourceKind::Raw) {
                    match self.file_path() {
                        None => errors.push("url: a file:// or raw:// URL needs an absolute path".into()),
                        Some(_) if policy.media_dir.is_none() => errors.push(
                            "url: local files are not accepted (set cameras.media_dir to serve files from one \
                             directory)"
                                .into(),
                        ),
                        // Judged on the path as written first, so nothing outside the media
                        // directory is even looked up (no probing for files); then on the real
                        // path, so symbolic links cannot lead out of it either.
                        Some(path)
                            if !policy.admits_written(&path)
                                || path.components().any(|c| c == Component::ParentDir) =>
                        {
                            errors.push(OUTSIDE_MEDIA_DIR.into())
                        }
                        Some(path) => match path.canonicalize() {
                            Ok(real) if !policy.admits_real(&real) => errors.push(OUTSIDE_MEDIA_DIR.into()),
                            Ok(real) if real.is_file() => {}
                            _ => errors.push("url: file not found".into()),
                        },
                    }
                    if self.rtsp_transport.is_some() {
                        errors.push("rtsp_transport applies to rtsp:// and rtsps:// URLs only".into());
                    }
                    if self.replay.is_some_and(|r| r.start_frame > MAX_START_FRAME) {
                        errors.push(format!("replay start frame must be at most {MAX_START_FRAME}"));
                    }
                    if kind == SourceKind::Raw && self.replay.is_some() {
                        errors.push("replay applies to file:// URLs only".into());
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
        // FFmpeg looks protocols up as written, in lower case.
        if !self.url.starts_with(url.scheme()) {
            return Err("url scheme must be written in lower case (rtsp://, not RTSP://)".into());
        }
        match url.scheme() {
            "rtsp" | "rtsps" | "http" | "https" if url.host_str().is_some() => Ok(SourceKind::Network),
            "rtsp" | "rtsps" | "http" | "https" => Err("url needs a host".into()),
            "file" => Ok(SourceKind::File),
            SIMULATED_SCHEME => Ok(SourceKind::Simulated),
            RAW_SCHEME => Ok(SourceKind::Raw),
            other => Err(format!(
                "url scheme {other:?} is not supported (use rtsp, rtsps, http, https, file or raw under \
                 cameras.media_dir, or sim with simulator.enabled)"
            )),
        }
    }

    /// The local path of a file:// or raw:// URL.
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

    /// Every network scheme, and files under the system's temporary directory.
    fn open_policy() -> SourcePolicy {
        SourcePolicy {
            media_dir: Some(MediaDir::new(&std::env::temp_dir()).unwrap()),
            ..SourcePolicy::any_local_file()
        }
    }

    #[test]
    fn unsupported_schemes_are_rejected_without_echoing_the_url() {
        for url in [
            "ftp://u:s3cret@h/x",
            "concat:a|b",
            "pipe:0",
            "data:,x",
            "exec:cat /etc/passwd",
            "subfile,,start,0,end,0,,:/etc/passwd",
            "gopher://u:s3cret@h/x",
            "tcp://u:s3cret@h:554",
            "cache:file:/etc/passwd",
        ] {
            let errors = spec(url).validate(&open_policy());
            assert_eq!(errors.len(), 1, "{url}: {errors:?}");
            assert!(!errors[0].contains("s3cret"));
        }
        assert!(spec("rtsp://cam.example/live").validate(&open_policy()).is_empty());
        let missing = std::env::temp_dir().canonicalize().unwrap().join("definitely-not-here.avi");
        assert!(spec(&format!("file://{}", missing.display())).validate(&open_policy())[0].contains("not found"));
    }

    #[test]
    fn files_only_under_the_media_directory() {
        let media = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(media.path().join("clip.avi"), b"x").unwrap();
        std::fs::write(outside.path().join("secret.avi"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.avi"), media.path().join("link.avi")).unwrap();
        let policy = SourcePolicy {
            network_schemes: vec!["rtsp".into()],
            media_dir: Some(MediaDir::new(media.path()).unwrap()),
            simulated: false,
        };
        let url = |p: &Path| format!("file://{}", p.display());
        assert!(spec(&url(&media.path().join("clip.avi"))).validate(&policy).is_empty());
        for escaped in [
            outside.path().join("secret.avi"),
            media.path().join("../").join(outside.path().file_name().unwrap()).join("secret.avi"),
            media.path().join("link.avi"),
        ] {
            let errors = spec(&url(&escaped)).validate(&policy);
            assert_eq!(
                errors,
                vec!["url: local files are accepted only under cameras.media_dir".to_string()],
                "{escaped:?}"
            );
        }
        let none = SourcePolicy { media_dir: None, ..policy.clone() };
        assert!(spec(&url(&media.path().join("clip.avi"))).validate(&none)[0].contains("not accepted"));
        // Only the configured network schemes, written in lower case.
        assert!(spec("rtsp://cam.example/live").validate(&policy).is_empty());
        assert!(spec("http://cam.example/live").validate(&policy)[0].contains("not allowed"));
        assert!(spec("RTSP://cam.example/live").validate(&policy)[0].contains("lower case"));
        assert!(spec("FILE:///etc/passwd").validate(&policy)[0].contains("lower case"));
        // A media directory reached through a link admits files written either way.
        let alias = outside.path().join("alias");
        std::os::unix::fs::symlink(media.path(), &alias).unwrap();
        let linked = SourcePolicy { media_dir: Some(MediaDir::new(&alias).unwrap()), ..policy.clone() };
        assert!(spec(&url(&alias.join("clip.avi"))).validate(&linked).is_empty());
        assert!(spec(&url(&media.path().join("clip.avi"))).validate(&linked).is_empty());
        assert!(!spec(&url(&outside.path().join("secret.avi"))).validate(&linked).is_empty());
    }

    #[test]
    fn options_must_fit_the_source() {
        let mut s = spec("rtsp://cam.example/live");
        s.replay = Some(ReplayOptions::default());
        assert_eq!(s.validate(&open_policy()), vec!["replay applies to file:// URLs only".to_string()]);
        let mut s = spec("http://cam.example/live");
        s.rtsp_transport = Some(RtspTransport::Udp);
        assert_eq!(s.validate(&open_policy()).len(), 1);
    }

    #[test]
    fn a_replay_start_frame_is_bounded_and_never_json() {
        let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/assets/video/overpass_video03.avi");
        let mut s = spec(url::Url::from_file_path(clip.canonicalize().unwrap()).unwrap().as_str());
        let policy = SourcePolicy::any_local_file();
        s.replay = Some(ReplayOptions { looping: true, realtime: true, start_frame: MAX_START_FRAME });
        assert!(s.validate(&policy).is_empty(), "{:?}", s.validate(&policy));
        s.replay = Some(ReplayOptions { start_frame: MAX_START_FRAME + 1, ..ReplayOptions::default() });
        assert_eq!(s.validate(&policy), vec![format!("replay start frame must be at most {MAX_START_FRAME}")]);
        let json = serde_json::to_value(s.replay.unwrap()).unwrap();
        assert!(json.get("start_frame").is_none(), "{json}");
        let parsed: Result<ReplayOptions, _> = serde_json::from_str(r#"{"start_frame": 5}"#);
        assert!(parsed.is_err(), "the API does not take a start frame");
    }

    #[test]
    fn control_characters_are_refused() {
        let mut s = spec("rtsp://cam.example/live");
        s.name = "gate\u{0}1".into();
        assert_eq!(s.validate(&open_policy()).len(), 1);
    }

    #[test]
    fn simulated_cameras_only_while_the_simulator_runs() {
        let sim = "sim://gate-1?crossings_per_min=60";
        assert_eq!(spec(sim).source_kind(), Ok(SourceKind::Simulated));
        let errors = spec(sim).validate(&open_policy());
        assert_eq!(errors, vec!["url: sim:// cameras run only while simulator.enabled is true".to_string()]);
        let simulating = open_policy().with_simulator(true);
        assert!(spec(sim).validate(&simulating).is_empty());
        assert!(spec("rtsp://cam.example/live").validate(&simulating)[0].contains("only sim://"));
        assert!(spec("sim://gate-1?crossings_per_min=0").validate(&simulating)[0].contains("crossings_per_min"));
        let mut s = spec(sim);
        s.replay = Some(ReplayOptions::default());
        assert_eq!(s.validate(&simulating), vec!["replay applies to file:// URLs only".to_string()]);
    }

    #[test]
    fn raw_cameras_parse_and_stay_under_the_media_directory() {
        let media = tempfile::tempdir().unwrap();
        let frames = media.path().canonicalize().unwrap().join("frames.bgr");
        std::fs::write(&frames, [0u8; 12]).unwrap();
        let url = format!("raw://{}?width=2&height=2&fps=25", frames.display());
        let parsed = RawFrames::from_url(&url).unwrap().unwrap();
        assert_eq!(parsed, RawFrames { path: frames.clone(), width: 2, height: 2, fps: 25.0 });
        assert_eq!(parsed.frame_len(), 12);
        let default_fps = format!("raw://{}?height=2&width=2", frames.display());
        assert_eq!(RawFrames::from_url(&default_fps).unwrap().unwrap().fps, 30.0);
        assert_eq!(RawFrames::from_url("rtsp://cam/live"), None, "another scheme");
        for (bad, says) in [
            (format!("raw://{}?width=2", frames.display()), "raw:///ABS/PATH"),
            (format!("raw://{}?width=0&height=2", frames.display()), "width must be"),
            (format!("raw://{}?width=2&height=9000", frames.display()), "height must be"),
            (format!("raw://{}?width=2&height=2&fps=0", frames.display()), "fps must be"),
            (format!("raw://{}?width=2&height=2&rate=5", frames.display()), "raw:///ABS/PATH"),
            (format!("raw://host{}?width=2&height=2", frames.display()), "raw:///ABS/PATH"),
        ] {
            let error = RawFrames::from_url(&bad).unwrap().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let policy = SourcePolicy {
            network_schemes: vec!["rtsp".into()],
            media_dir: Some(MediaDir::new(media.path()).unwrap()),
            simulated: false,
        };
        assert_eq!(spec(&url).source_kind(), Ok(SourceKind::Raw));
        assert!(spec(&url).validate(&policy).is_empty(), "{:?}", spec(&url).validate(&policy));
        let none = SourcePolicy { media_dir: None, ..policy.clone() };
        assert!(spec(&url).validate(&none)[0].contains("not accepted"));
        let outside = "raw:///etc/passwd?width=2&height=2";
        assert_eq!(spec(outside).validate(&policy), vec![OUTSIDE_MEDIA_DIR.to_string()]);
        let mut replayed = spec(&url);
        replayed.replay = Some(ReplayOptions::default());
        assert_eq!(replayed.validate(&policy), vec!["replay applies to file:// URLs only".to_string()]);
        assert!(spec(&url).validate(&policy.clone().with_simulator(true))[0].contains("only sim://"));
    }

    #[test]
    fn without_ffmpeg_only_raw_and_simulated_cameras_are_accepted() {
        let errors = spec("rtsp://cam.example/live").validate(&open_policy());
        let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/assets/video/overpass_video03.avi");
        let file = spec(url::Url::from_file_path(clip.canonicalize().unwrap()).unwrap().as_str());
        let file_errors = file.validate(&SourcePolicy::any_local_file());
        if cfg!(feature = "ffmpeg") {
            assert!(errors.is_empty() && file_errors.is_empty(), "{errors:?} {file_errors:?}");
        } else {
            assert_eq!(errors, vec![NO_FFMPEG.to_string()]);
            assert_eq!(file_errors, vec![NO_FFMPEG.to_string()]);
        }
    }

    #[test]
    fn ids_and_fps_are_checked_together() {
        let mut s = spec("rtsp://cam.example/live");
        s.id = "bad id".into();
        s.fps = Some(0.0);
        assert_eq!(s.validate(&open_policy()).len(), 2);
    }
}
