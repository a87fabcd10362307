//! Loading: the embedded default, the file, `LMX_` variables, then
//! `--option key=value`, each over the one before; secrets read from their
//! `*_file` paths; what was given but not taken reported.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde_json::Value;

use super::{Config, ConfigError};

/// Variables with the prefix that are lmx's own settings, not keys.
const OWN_VARIABLES: [&str; 2] = ["LOG", "CRASH_POINT"];

/// A loaded configuration, and what was given but ignored (to be logged
/// as warnings once logging runs).
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The top-level keys, read off the configuration itself.
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(o)) => o.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// `LMX_` variables that look like configuration (`__` nesting) but name
/// no section: ignored, with a warning each.
fn stray_variables(names: impl Iterator<Item = String>, keys: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix("LMX_") else { continue };
        if OWN_VARIABLES.contains(&rest) || !rest.contains("__") {
            continue;
        }
        let section = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
        if !keys.contains(&section) {
            out.push(format!("{name}: `{section}` is not a configuration section; ignored"));
        }
    }
    out
}

/// A `--option key=value` as a line of TOML: the value as TOML when it
/// reads as one (`true`, `8`, `"x"`, `["a"]`), else as a string.
fn option_line(option: &str) -> Result<String, ConfigError> {
    let (key, value) = option.split_once('=').ok_or_else(|| ConfigError::Option(option.to_owned()))?;
    let key = key.trim();
    let key_ok = !key.is_empty()
        && key.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !key_ok {
        return Err(ConfigError::Option(option.to_owned()));
    }
    let as_toml = format!("{key} = {value}");
    if toml::from_str::<toml::Table>(&as_toml).is_ok() {
        return Ok(as_toml);
    }
    Ok(format!("{key} = {}", toml::Value::String(value.to_owned())))
}

/// Reads a secret from its file when `file` is set (not both).
fn secret(name: &str, value: &mut Option<String>, file: &Option<std::path::PathBuf>) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::SecretFile(name.to_owned(), format!("set {name} or {name}_file, not both")));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::SecretFile(format!("{name}_file"), format!("{}: {e}", path.display())))?;
    *value = Some(text.trim_end_matches(['\n', '\r']).to_owned());
    Ok(())
}

impl Config {
    /// Default, then the file (if given), then `LMX_` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(Config::load_with(file, &[])?.config)
    }

    /// Default, then the file, `LMX_` variables and `options`.
    pub fn load_with(file: Option<&Path>, options: &[String]) -> Result<Loaded, ConfigError> {
        let keys = top_level_keys();
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        let sections = keys.clone();
        // LMX_LOG is the log filter, not the `log` section (LMX_LOG__LEVEL is).
        let section = move |k: &figment::value::UncasedStr| {
            let own = OWN_VARIABLES.iter().any(|v| k.as_str().eq_ignore_ascii_case(v));
            let first = k.as_str().split("__").next().unwrap_or("").to_ascii_lowercase();
            !own && sections.contains(&first)
        };
        fig = fig.merge(Env::prefixed("LMX_").filter(section).split("__"));
        for o in options {
            fig = fig.merge(Toml::string(&option_line(o)?));
        }
        let mut config: Config = fig.extract().map_err(Box::new)?;
        let r = &mut config.registration;
        secret("registration.shared_secret", &mut r.shared_secret, &r.shared_secret_file)?;
        let t = &mut config.turn;
        secret("turn.shared_secret", &mut t.shared_secret, &t.shared_secret_file)?;
        secret("turn.password", &mut t.password, &t.password_file)?;
        let a = &mut config.admin;
        secret("admin.token", &mut a.token, &a.token_file)?;
        let pg = &mut config.storage.postgres;
        secret("storage.postgres.url", &mut pg.url, &pg.url_file)?;
        config.validate()?;
        let warnings = stray_variables(std::env::vars().map(|(k, _)| k), &keys);
        Ok(Loaded { config, warnings })
    }

    /// The configuration as TOML, secrets masked.
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        let mask = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("********".into());
            }
        };
        mask(&mut shown.registration.shared_secret);
        mask(&mut shown.turn.shared_secret);
        mask(&mut shown.admin.token);
        mask(&mut shown.turn.password);
        mask(&mut shown.storage.postgres.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_a_key_and_strays_are_named() {
        let keys = top_level_keys();
        for k in ["federation", "client", "media", "push", "turn", "log", "server_name"] {
            assert!(keys.contains(&k.to_owned()), "{k} missing from {keys:?}");
        }
        let vars = ["LMX_FEDERTION__LISTEN", "LMX_LOG", "LMX_PUSH__INCLUDE_CONTENT", "LMX_HUB_URL", "PATH"];
        let strays = stray_variables(vars.iter().map(|s| s.to_string()), &keys);
        assert_eq!(strays.len(), 1, "{strays:?}");
        assert!(strays[0].starts_with("LMX_FEDERTION__LISTEN"));
    }

    #[test]
    fn options_are_toml_or_strings() {
        assert_eq!(option_line("client.listen=127.0.0.1:9000").unwrap(), r#"client.listen = "127.0.0.1:9000""#);
        assert_eq!(option_line("registration.enabled=true").unwrap(), "registration.enabled = true");
        assert_eq!(
            option_line("push.allow_ip_ranges=[\"10.0.0.0/8\"]").unwrap(),
            "push.allow_ip_ranges = [\"10.0.0.0/8\"]"
        );
        let quoted: toml::Table = toml::from_str(&option_line("server_name=a \"b\"").unwrap()).unwrap();
        assert_eq!(quoted["server_name"].as_str(), Some("a \"b\""), "plain text stays as typed");
        for bad in ["novalue", "=x", "a..b=1", "a b=1", "a.b c=1"] {
            assert!(option_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let mut c = Config::default();
        c.admin.token = Some(String::new());
        assert!(c.validate().is_err(), "an empty token");
        c.admin.token = Some("short".into());
        assert!(c.validate().is_err());
        c.admin.token = Some("a-long-enough-admin-token".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn secrets_come_from_files_and_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut value = None;
        secret("registration.shared_secret", &mut value, &Some(path.clone())).unwrap();
        assert_eq!(value.as_deref(), Some("s3cret"));
        assert!(secret("x", &mut value, &Some(path)).is_err(), "both set");
        assert!(secret("x", &mut None, &Some(dir.path().join("absent"))).is_err());
        let mut c = Config::default();
        c.registration.shared_secret = value;
        let shown = c.masked_toml();
        assert!(!shown.contains("s3cret") && shown.contains("********"), "{shown}");
    }
}
