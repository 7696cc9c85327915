//! Configuration errors in the user's words: the key as written (`server.listen`), where
//! it was written (the file, or the environment variable), the value and what was
//! expected, and for an unknown key the closest valid one.

use std::path::PathBuf;

use figment::error::{Actual, Kind};
use figment::value::Value;
use figment::{Figment, Provider, Source};

use super::{env_provider, Config, ENV_PREFIX};

/// Keys whose values are never repeated in a message.
const SECRET_KEYS: &[&str] = &["signing.master_key"];

/// One line per error figment reports.
pub(super) fn describe(errors: figment::Error, figment: &Figment) -> String {
    errors
        .into_iter()
        .map(|error| describe_one(&error, figment))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a value came from.
enum Origin {
    File(PathBuf),
    /// The environment variable's name.
    Env(String),
    Other(String),
    Unknown,
}

impl Origin {
    fn of(error: &figment::Error) -> Origin {
        let Some(metadata) = &error.metadata else {
            return Origin::Unknown;
        };
        if let Some(Source::File(path)) = &metadata.source {
            return Origin::File(path.clone());
        }
        if metadata.name == env_provider().metadata().name {
            return Origin::Env(env_var(&error.path));
        }
        Origin::Other(metadata.name.to_string())
    }

    /// The file's path or the variable's name.
    fn name(&self) -> Option<String> {
        match self {
            Origin::File(path) => Some(path.display().to_string()),
            Origin::Env(var) => Some(format!("environment variable {var}")),
            Origin::Other(name) => Some(name.clone()),
            Origin::Unknown => None,
        }
    }

    /// " in FILE", or nothing when the origin is unknown.
    fn in_(&self) -> String {
        self.name().map(|n| format!(" in {n}")).unwrap_or_default()
    }
}

fn describe_one(error: &figment::Error, figment: &Figment) -> String {
    let origin = Origin::of(error);
    let key = error.path.join(".");
    let subject = if key.is_empty() {
        "the configuration".to_string()
    } else {
        key.clone()
    };
    let place = origin.in_();
    match &error.kind {
        Kind::UnknownField(field, expected) => {
            unknown_key(error, field, expected, figment, &origin)
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let value = if SECRET_KEYS.contains(&key.as_str()) {
                "the value (not shown)".to_string()
            } else {
                show(actual)
            };
            let mut line = format!("{subject}{place}: {value} is not {}", phrase(expected));
            if matches!(origin, Origin::Env(_)) && expected == "a sequence" {
                line.push_str(" (in an environment variable: [A, B])");
            }
            line
        }
        Kind::InvalidLength(len, expected) => {
            format!("{subject}{place}: {len} items, expected {expected}")
        }
        Kind::UnknownVariant(variant, expected) => format!(
            "{subject}{place}: {variant:?} is not one of {}",
            expected.join(", ")
        ),
        Kind::MissingField(field) => format!("{}{place} is missing", join(&key, field)),
        Kind::DuplicateField(field) => {
            format!("{}{place} is given more than once", join(&key, field))
        }
        // A file that cannot be read or parsed, or a message of a type's own.
        Kind::Message(message) if key.is_empty() => match origin.name() {
            Some(name) => format!("{name}: {}", message.trim_end()),
            None => message.trim_end().to_string(),
        },
        kind => format!("{subject}{place}: {kind}"),
    }
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// `unknown key server.lisen in FILE; did you mean server.listen?`
fn unknown_key(
    error: &figment::Error,
    field: &str,
    expected: &[&str],
    figment: &Figment,
    origin: &Origin,
) -> String {
    let mut path = error.path.clone();
    if path.last().map(String::as_str) != Some(field) {
        path.push(field.to_string());
    }
    let parents = &path[..path.len() - 1];
    let is_section = figment
        .find_value(&path.join("."))
        .is_ok_and(|v| v.as_dict().is_some());
    let show = |path: &[String]| -> String {
        match origin {
            Origin::File(_) if is_section => format!("[{}]", path.join(".")),
            _ => path.join("."),
        }
    };
    let mut line = format!(
        "unknown {} {}{}",
        if is_section { "section" } else { "key" },
        show(&path),
        origin.in_()
    );
    let suggestions = suggest(parents, field, expected, is_section);
    if !suggestions.is_empty() {
        let shown: Vec<String> = suggestions
            .iter()
            .map(|suggestion| match origin {
                // The variable as it should have been written.
                Origin::Env(var) => {
                    let parts = env_parts(var);
                    let mut fixed = suggestion.clone();
                    fixed.extend(parts.into_iter().skip(path.len()));
                    env_name(&fixed)
                }
                _ => show(suggestion),
            })
            .collect();
        line.push_str(&format!("; did you mean {}?", shown.join(" or ")));
    }
    line
}

/// The closest valid keys to `field` (under `parents`): among its siblings first, then,
/// for a key, among the keys of every section (a key put in the wrong section, or a
/// dotted key left without its section).
fn suggest(
    parents: &[String],
    field: &str,
    expected: &[&str],
    is_section: bool,
) -> Vec<Vec<String>> {
    let with_parents = |name: &str| {
        let mut path = parents.to_vec();
        path.push(name.to_string());
        path
    };
    let siblings = closest(
        field,
        expected.iter().map(|name| (*name, with_parents(name))),
    );
    if !siblings.is_empty() || is_section {
        return siblings;
    }
    let everywhere = known_keys()
        .into_iter()
        .filter(|path| path.len() > 1 && path[..path.len() - 1] != *parents)
        .map(|path| (path.last().cloned().unwrap_or_default(), path))
        .collect::<Vec<_>>();
    closest(
        field,
        everywhere
            .iter()
            .map(|(name, path)| (name.as_str(), path.clone())),
    )
}

/// The candidates nearest to `written`, if near enough to be a slip of the keyboard.
fn closest<'a, T>(written: &str, candidates: impl Iterator<Item = (&'a str, T)>) -> Vec<T> {
    let mut best = Vec::new();
    let mut best_distance = usize::MAX;
    for (name, value) in candidates {
        let distance = strsim::damerau_levenshtein(written, name);
        let allowed = (written.len().max(name.len()) / 4).max(1);
        if distance > allowed || distance > best_distance {
            continue;
        }
        if distance < best_distance {
            best.clear();
            best_distance = distance;
        }
        best.push(value);
    }
    best
}

/// Every key of the configuration, as paths (`["server", "listen"]`).
fn known_keys() -> Vec<Vec<String>> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Some(dict) = value.as_dict() {
            for (key, value) in dict {
                path.push(key.clone());
                out.push(path.clone());
                walk(value, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(defaults) = Value::serialize(Config::default()) {
        walk(&defaults, &mut Vec::new(), &mut out);
    }
    out
}

/// A value as the user wrote it.
fn show(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Char(c) => format!("{:?}", c.to_string()),
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Seq => "a list".to_string(),
        Actual::Map => "a table".to_string(),
        Actual::Unit | Actual::Option => "an empty value".to_string(),
        other => other.to_string(),
    }
}

/// What serde expected, in words, to follow "VALUE is not".
fn phrase(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" | "u128" | "usize" => "a whole number (0 or more)".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a borrowed string" => "a string".to_string(),
        "path string" => "a path (a string)".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a table".to_string(),
        other if other.starts_with("struct ") => "a table".to_string(),
        other => other.to_string(),
    }
}

/// The environment variable that set `path` (or a section above it), as written; the
/// canonical name when none is found.
fn env_var(path: &[String]) -> String {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with(ENV_PREFIX))
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|name| env_parts(name).starts_with(path))
        .unwrap_or_else(|| env_name(path))
}

/// The key path an environment variable sets (`..__SERVER__LISTEN`: `server`, `listen`).
fn env_parts(name: &str) -> Vec<String> {
    name.strip_prefix(ENV_PREFIX)
        .unwrap_or(name)
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The environment variable for a key path.
fn env_name(path: &[String]) -> String {
    let upper: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", upper.join("__"))
}
