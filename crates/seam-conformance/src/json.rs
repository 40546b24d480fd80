//! Reading the JSON of a case or model file with the path of the offending value in every error.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::Protocol;
use serde_json::Value;

use crate::ConformanceError;

/// Reads one of the two files; errors name it.
pub(crate) struct Doc {
    file: &'static str,
}

pub(crate) const MODEL: Doc = Doc { file: "model" };
pub(crate) const CASES: Doc = Doc { file: "cases" };

/// Labels of a namespace or pod.
pub(crate) type Labels = BTreeMap<String, String>;

impl Doc {
    pub(crate) fn err(&self, path: &str, message: impl Into<String>) -> ConformanceError {
        ConformanceError::Malformed {
            file: self.file,
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Parses the text of the file.
    pub(crate) fn parse(&self, text: &str) -> Result<Value, ConformanceError> {
        serde_json::from_str(text).map_err(|e| ConformanceError::NotJson {
            file: self.file,
            message: e.to_string(),
        })
    }

    pub(crate) fn get<'a>(
        &self,
        v: &'a Value,
        path: &str,
        key: &str,
    ) -> Result<&'a Value, ConformanceError> {
        v.get(key)
            .ok_or_else(|| self.err(&format!("{path}.{key}"), "is missing"))
    }

    pub(crate) fn str<'a>(&self, v: &'a Value, path: &str) -> Result<&'a str, ConformanceError> {
        v.as_str()
            .ok_or_else(|| self.err(path, "expected a string"))
    }

    pub(crate) fn array<'a>(
        &self,
        v: &'a Value,
        path: &str,
    ) -> Result<&'a Vec<Value>, ConformanceError> {
        v.as_array()
            .ok_or_else(|| self.err(path, "expected a list"))
    }

    pub(crate) fn bool(&self, v: &Value, path: &str) -> Result<bool, ConformanceError> {
        v.as_bool()
            .ok_or_else(|| self.err(path, "expected true or false"))
    }

    pub(crate) fn u16(&self, v: &Value, path: &str) -> Result<u16, ConformanceError> {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| self.err(path, "expected a port number"))
    }

    pub(crate) fn protocol(&self, v: &Value, path: &str) -> Result<Protocol, ConformanceError> {
        self.str(v, path)?
            .parse()
            .map_err(|_| self.err(path, "expected TCP, UDP or SCTP"))
    }

    pub(crate) fn labels(&self, v: &Value, path: &str) -> Result<Labels, ConformanceError> {
        let map = v
            .as_object()
            .ok_or_else(|| self.err(path, "expected a map of labels"))?;
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.str(v, &format!("{path}.{k}"))?.to_string())))
            .collect()
    }

    pub(crate) fn ip_plan(
        &self,
        v: &Value,
        path: &str,
    ) -> Result<BTreeMap<String, Ipv4Addr>, ConformanceError> {
        let map = v
            .as_object()
            .ok_or_else(|| self.err(path, "expected a map of pod addresses"))?;
        map.iter()
            .map(|(k, v)| {
                let p = format!("{path}.{k}");
                let addr = self
                    .str(v, &p)?
                    .parse()
                    .map_err(|_| self.err(&p, "expected an IPv4 address"))?;
                Ok((k.clone(), addr))
            })
            .collect()
    }
}
