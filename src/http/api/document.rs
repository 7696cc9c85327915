//! What the operations of the OpenAPI document share, written once here rather than in
//! every handler's annotation: the rules of names (`names::NameRule`) on path and query
//! parameters and on the fields of request bodies that name an owner or a user; the answers any request may get (401 with `WWW-Authenticate`, 429 and 503
//! with `Retry-After`; 400, 413 and 415 for a JSON body); the owner routes again under
//! Gitea's and Forgejo's layout; an operation id of its own for every operation.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

use crate::names::NameRule;

/// Where Gitea and Forgejo serve the owner routes (`/{owner}/...` here).
const GITEA_BASE: &str = "/api/packages/{owner}/alpine";

/// Operations that read no credentials: no 401, no 429.
const WITHOUT_CREDENTIALS: &[&str] = &["openapi", "healthz", "readyz"];

/// Operations that need neither the database nor blob storage: no 503.
const WITHOUT_BACKENDS: &[&str] = &["openapi", "healthz"];

/// Adds what every operation shares to a document generated from the annotations.
pub struct Shared;

impl utoipa::Modify for Shared {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                name_rules(operation);
                shared_answers(operation);
            }
        }
        body_name_rules(openapi);
        gitea_layout(openapi);
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in operations(item) {
                // One annotation documents GET and HEAD: `get_index` and `head_index`.
                if method == "head" {
                    if let Some(id) = &mut operation.operation_id {
                        *id = format!("head_{}", id.strip_prefix("get_").unwrap_or(id));
                    }
                }
            }
        }
    }
}

/// The operations of a path, by method.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("head", &mut item.head),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
        ("options", &mut item.options),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
    .collect()
}

/// The rule of what a parameter or field of this name names, if it names something.
fn rule_of(name: &str) -> Option<NameRule> {
    Some(match name {
        "owner" | "branch" | "repository" | "user" => NameRule::SEGMENT,
        "arch" => NameRule::ARCH,
        "file" => NameRule::PACKAGE_FILE,
        "name" => NameRule::PACKAGE_NAME,
        "keyname" => NameRule::KEY_NAME,
        "snapshot" => NameRule::SNAPSHOT,
        "view" => NameRule::VIEW,
        _ => return None,
    })
}

/// A string that follows `rule`; with `empty`, the empty string too (a query filter left
/// empty, as a web form sends it, filters nothing).
fn named(rule: NameRule, empty: bool) -> Schema {
    let (pattern, min_length, description) = if empty {
        let inner = rule.pattern.trim_start_matches('^').trim_end_matches('$');
        (
            format!("^(?:{inner})?$"),
            0,
            format!("{}; empty: no filter", rule.description),
        )
    } else {
        (
            rule.pattern.to_string(),
            rule.min_length,
            rule.description.to_string(),
        )
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .min_length(Some(min_length))
            .max_length(Some(rule.max_length))
            .description(Some(description))
            .build(),
    )
}

/// Path and query parameters that name something get the rule of its name.
fn name_rules(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let query = match parameter.parameter_in {
            ParameterIn::Path => false,
            ParameterIn::Query => true,
            _ => continue,
        };
        if let Some(rule) = rule_of(&parameter.name) {
            parameter.schema = Some(RefOr::T(named(rule, query)));
        }
    }
}

/// Fields of request bodies that name an owner or a user.
const NAMED_FIELDS: &[(&str, &str)] = &[
    ("NewUser", "name"),
    ("NewOwner", "name"),
    ("NewToken", "user"),
    ("NewToken", "owner"),
];

/// Fields of request bodies that name a branch, repository, architecture or file, by the
/// rule of their name (`rule_of`).
const RULED_FIELDS: &[(&str, &str)] = &[
    ("CopyRequest", "branch"),
    ("CopyRequest", "repository"),
    ("CopyRequest", "arch"),
    ("CopyRequest", "file"),
    ("CopyTarget", "owner"),
    ("CopyTarget", "branch"),
    ("CopyTarget", "repository"),
    ("RuleRequest", "branch"),
    ("RuleRequest", "repository"),
];

/// The fields of `NAMED_FIELDS` get the rule of owner names, those of `RULED_FIELDS` the
/// rule of theirs (null stays allowed where it was: JSON Schema applies a pattern to
/// strings only).
fn body_name_rules(openapi: &mut OpenApi) {
    let Some(components) = &mut openapi.components else {
        return;
    };
    let named = NAMED_FIELDS
        .iter()
        .map(|(schema, field)| (*schema, *field, Some(NameRule::SEGMENT)));
    let ruled = RULED_FIELDS
        .iter()
        .map(|(schema, field)| (*schema, *field, rule_of(field)));
    for (schema, field, rule) in named.chain(ruled) {
        let Some(rule) = rule else {
            continue;
        };
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) else {
            continue;
        };
        let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(field) else {
            continue;
        };
        property.pattern = Some(rule.pattern.to_string());
        property.min_length = Some(rule.min_length);
        property.max_length = Some(rule.max_length);
        property
            .description
            .get_or_insert_with(|| rule.description.to_string());
    }
}

/// An answer in the error shape.
fn error(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build(),
    )
}

/// The answers an operation gets from the layers every request goes through, unless its
/// annotation describes them itself; and the headers they carry.
fn shared_answers(operation: &mut Operation) {
    let id = operation.operation_id.clone().unwrap_or_default();
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error(description));
    };
    if json_body {
        add("400", "Malformed JSON, or a bad or unknown field");
        add("413", "A body over limits.max_json_bytes");
        add("415", "A body without Content-Type: application/json");
    }
    if !WITHOUT_CREDENTIALS.contains(&id.as_str()) {
        add(
            "401",
            "Credentials that do not authenticate (wrong, expired, revoked), or none where \
             they are needed",
        );
        add(
            "429",
            "Too many failed authentication attempts from this address, or too many password \
             checks under way from it",
        );
    }
    if !WITHOUT_BACKENDS.contains(&id.as_str()) {
        add(
            "503",
            "The database or blob storage is unreachable, or more password checks (or other \
             bounded work) at once than the server takes: with Retry-After; or a file the \
             registry lists is missing from blob storage (alpine-registry fsck names it)",
        );
    }
    let integer = || Schema::Object(ObjectBuilder::new().schema_type(Type::Integer).build());
    let string = || Schema::Object(ObjectBuilder::new().schema_type(Type::String).build());
    for (status, name, schema, description) in [
        (
            "401",
            "WWW-Authenticate",
            string(),
            "Basic realm=\"alpine-registry\", charset=\"UTF-8\"",
        ),
        (
            "429",
            "Retry-After",
            integer(),
            "Seconds to wait before trying again",
        ),
        (
            "503",
            "Retry-After",
            integer(),
            "Seconds to wait before trying again",
        ),
    ] {
        if let Some(RefOr::T(response)) = responses.get_mut(status) {
            response.headers.entry(name.to_string()).or_insert_with(|| {
                HeaderBuilder::new()
                    .schema(schema)
                    .description(Some(description))
                    .build()
            });
        }
    }
}

/// The owner routes (`/{owner}/...`) again under `/api/packages/{owner}/alpine/...`, where
/// the router serves them too.
fn gitea_layout(openapi: &mut OpenApi) {
    let mirrored: Vec<(String, PathItem)> = openapi
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let rest = path.strip_prefix("/{owner}/")?;
            let mut item = item.clone();
            for (_, operation) in operations(&mut item) {
                if let Some(id) = &mut operation.operation_id {
                    id.push_str("_gitea");
                }
            }
            Some((format!("{GITEA_BASE}/{rest}"), item))
        })
        .collect();
    openapi.paths.paths.extend(mirrored);
}
