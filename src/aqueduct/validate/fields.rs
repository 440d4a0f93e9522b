//! One JSON object under validation: each field is taken once, typed, and checked for control
//! characters; whatever nobody took is an unknown field.

use super::{READ_ONLY_FIELDS, SECTION_KEYWORDS, control_chars, key, leaf};
use crate::api_error::ApiError;
use crate::config::Mode;
use serde_json::{Map, Value};

/// The fields of one JSON object being validated: each is taken once, and whatever is left
/// at the end (other than read-only fields) is an unknown field.
pub(super) struct Fields {
    prefix: String,
    object: Map<String, Value>,
    ignore: &'static [&'static str],
}

impl Fields {
    pub(super) fn top_level(body: &Value) -> Result<Self, ApiError> {
        let object = match body {
            Value::Null => Map::new(),
            Value::Object(object) => object.clone(),
            _ => return Err(ApiError::bad_field("body", "body must be a JSON object")),
        };
        Ok(Fields {
            prefix: String::new(),
            object,
            ignore: READ_ONLY_FIELDS,
        })
    }

    pub(super) fn nested(path: &str, value: &Value) -> Result<Self, ApiError> {
        let Value::Object(object) = value else {
            return Err(ApiError::bad_field(
                path,
                format!("{} must be an object", leaf(path)),
            ));
        };
        Ok(Fields {
            prefix: format!("{path}."),
            object: object.clone(),
            ignore: &[],
        })
    }

    pub(super) fn field(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Removes a field, so that `finish` sees only what nobody asked for.
    pub(super) fn take(&mut self, name: &str) -> Option<Value> {
        self.object.shift_remove(name)
    }

    pub(super) fn required(&self, name: &str) -> ApiError {
        ApiError::bad_field(self.field(name), format!("{name} is required"))
    }

    pub(super) fn one_of(&self, name: &str, allowed: &[&str]) -> ApiError {
        ApiError::bad_field(
            self.field(name),
            format!("{name} must be one of {}", allowed.join(", ")),
        )
    }

    /// An optional string without control characters; `null` counts as absent.
    pub(super) fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let field = self.field(name);
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().any(char::is_control) => Err(control_chars(&field)),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad_field(
                field,
                format!("{name} must be a string"),
            )),
        }
    }

    pub(super) fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| self.required(name))
    }

    /// A required frontend or backend name.
    pub(super) fn required_name(&mut self, name: &str) -> Result<String, ApiError> {
        let value = self.required_string(name)?;
        key(&value).map_err(|err| {
            ApiError::bad_field(self.field(name), err.message.replace("key", name))
        })?;
        Ok(value)
    }

    /// A registry name or version: the same rules as the registry's path segments.
    pub(super) fn registry_segment(
        &mut self,
        name: &'static str,
    ) -> Result<Option<String>, ApiError> {
        let Some(value) = self.string(name)? else {
            return Ok(None);
        };
        crate::registry::model::validate_segment(name, &value).map_err(|err| {
            ApiError::bad_field(self.field(name), format!("{name} {}", err.message))
        })?;
        Ok(Some(value))
    }

    pub(super) fn mode(&mut self) -> Result<Mode, ApiError> {
        match self.string("mode")?.as_deref() {
            None | Some("http") => Ok(Mode::Http),
            Some("tcp") => Ok(Mode::Tcp),
            Some(_) => Err(self.one_of("mode", &["http", "tcp"])),
        }
    }

    pub(super) fn array(&mut self, name: &str) -> Result<Vec<Value>, ApiError> {
        let field = self.field(name);
        match self.take(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(ApiError::bad_field(
                field,
                format!("{name} must be an array"),
            )),
        }
    }

    /// Raw config lines: strings, each a single line that does not open a new section.
    pub(super) fn natives(&mut self) -> Result<Vec<String>, ApiError> {
        let items = self.array("natives")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("{}natives[{i}]", self.prefix);
                let Value::String(line) = item else {
                    return Err(ApiError::bad_field(field, "natives must be strings"));
                };
                if line.chars().any(char::is_control) {
                    return Err(ApiError::bad_field(
                        field,
                        "a native must be a single line without control characters",
                    ));
                }
                let first_word = line.split_whitespace().next().unwrap_or("");
                if SECTION_KEYWORDS.contains(&first_word) {
                    return Err(ApiError::bad_field(
                        field,
                        format!("a native must not open a new section ({first_word})"),
                    ));
                }
                Ok(line.clone())
            })
            .collect()
    }

    /// Refuses whatever field nobody took.
    pub(super) fn finish(self) -> Result<(), ApiError> {
        match self
            .object
            .keys()
            .find(|k| !self.ignore.contains(&k.as_str()))
        {
            Some(unknown) => Err(ApiError::bad_field(
                self.field(unknown),
                format!("{unknown} is not allowed"),
            )),
            None => Ok(()),
        }
    }
}
