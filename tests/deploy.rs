//! The compose file is valid and configures the service only through keys the service knows.

use std::process::Command;

use its_analytics::settings::Settings;

#[test]
fn compose_file_is_valid_and_uses_known_settings() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("docker-compose")
        .current_dir(root)
        .args(["-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose (Debian package docker-compose, installed by scripts/setup.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8_lossy(&out.stdout);

    // Every ITS__ variable the compose file sets must load as a valid setting.
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if let Some((key, value)) = line.split_once(": ") {
            if key.starts_with("ITS__") {
                vars.push((key.to_string(), value.trim_matches(|c| c == '\'' || c == '"').to_string()));
            }
        }
    }
    assert!(vars.len() >= 4, "expected ITS__ settings in the compose file: {rendered}");
    let settings = Settings::load_with_env(None, Some(vars.into_iter().collect()))
        .unwrap_or_else(|e| panic!("the compose file's settings do not load: {e}"));
    assert_eq!(settings.redis.url, "redis://redis:6379");
    assert_eq!(settings.http.bind, "0.0.0.0:8080");
}
