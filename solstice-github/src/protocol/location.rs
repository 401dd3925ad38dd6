//! VSS route discovery: `connectionData` maps resource GUIDs to route templates.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::Value;

use crate::GithubError;
use crate::http::{Auth, Call, Http};
use crate::json::{field, str_field};

/// Resource GUIDs of the distributed-task API.
pub(crate) mod ids {
    pub const POOLS: &str = "a8c47e17-4d56-4a56-92bb-de7ea7dc65be";
    pub const AGENTS: &str = "e298ef32-5878-4cab-993c-043836571f42";
    pub const SESSIONS: &str = "134e239e-2df3-4794-a6f6-24f1f19ec8dc";
    pub const MESSAGES: &str = "c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7";
    pub const JOB_REQUESTS: &str = "fc825784-c92a-4299-9221-998a02d1b54f";
    pub const RECORDS: &str = "8893bc5b-35b2-4be7-83cb-99e683551db4";
    pub const FEED: &str = "858983e4-19bd-4c5e-864c-507b59b58b12";
    pub const LOGS: &str = "46f5667d-263a-4684-91b1-dff7fdcf64e2";
    pub const EVENTS: &str = "557624af-b29e-4c20-8ab0-0399d2204f3f";
}

const HUB: &str = "{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}";

/// The canonical templates, used when the service does not publish a resource.
fn canonical(id: &str) -> Option<String> {
    Some(match id {
        ids::POOLS => "_apis/distributedtask/pools/{poolId}".to_owned(),
        ids::AGENTS => "_apis/distributedtask/pools/{poolId}/agents/{agentId}".to_owned(),
        ids::SESSIONS => "_apis/distributedtask/pools/{poolId}/sessions/{sessionId}".to_owned(),
        ids::MESSAGES => "_apis/distributedtask/pools/{poolId}/messages/{messageId}".to_owned(),
        ids::JOB_REQUESTS => "_apis/distributedtask/pools/{poolId}/jobrequests/{requestId}".to_owned(),
        ids::RECORDS => format!("{HUB}/timelines/{{timelineId}}/records"),
        ids::FEED => format!("{HUB}/timelines/{{timelineId}}/records/{{recordId}}/feed"),
        ids::LOGS => format!("{HUB}/logs/{{logId}}"),
        ids::EVENTS => format!("{HUB}/events"),
        _ => return None,
    })
}

#[derive(Debug, Clone)]
struct Route {
    area: String,
    resource: String,
    template: String,
}

/// The routes a tenant publishes.
#[derive(Debug, Clone)]
pub(crate) struct Locations {
    base: String,
    routes: HashMap<String, Route>,
}

impl Locations {
    /// Reads `{base}/_apis/connectionData` (anonymous), falling back to the canonical
    /// templates for anything missing.
    pub async fn fetch(http: &Http, base: &str, auth: &Auth) -> Result<Self, GithubError> {
        let call = Call::new(Method::GET, crate::json::join_url(base, "_apis/connectionData"), "tenant")
            .query("connectOptions", "1")
            .query("lastChangeId", "-1")
            .query("lastChangeId64", "-1")
            .api("1.0");
        let data = http.send(&call, auth).await?;
        Ok(Self::from_connection_data(base, data.as_ref()))
    }

    pub fn from_connection_data(base: &str, data: Option<&Value>) -> Self {
        let mut routes = HashMap::new();
        let definitions = data
            .and_then(|d| field(d, "locationServiceData"))
            .and_then(|l| field(l, "serviceDefinitions"))
            .and_then(Value::as_array);
        for def in definitions.into_iter().flatten() {
            let (Some(id), Some(template)) = (str_field(def, "identifier"), str_field(def, "relativePath")) else {
                continue;
            };
            routes.insert(
                id.to_ascii_lowercase(),
                Route {
                    area: str_field(def, "serviceType").unwrap_or_default(),
                    resource: str_field(def, "displayName").unwrap_or_default(),
                    template,
                },
            );
        }
        let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
        Self { base, routes }
    }

    /// The URL of resource `id` with `values` substituted; segments without a value are
    /// dropped.
    pub fn url(&self, id: &str, values: &[(&str, &str)]) -> String {
        let (template, area, resource) = match self.routes.get(id) {
            Some(r) => (r.template.clone(), r.area.as_str(), r.resource.as_str()),
            None => (canonical(id).unwrap_or_default(), "distributedtask", ""),
        };
        let lookup = |name: &str| -> Option<String> {
            if name.eq_ignore_ascii_case("area") {
                return Some(area.to_owned());
            }
            if name.eq_ignore_ascii_case("resource") {
                return Some(resource.to_owned());
            }
            values.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| (*v).to_owned())
        };
        let mut out: Vec<String> = Vec::new();
        for segment in template.trim_start_matches('~').trim_start_matches('/').split('/') {
            let mut text = String::new();
            let mut rest = segment;
            let mut missing = false;
            while let Some(start) = rest.find('{') {
                text.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else { break };
                let name = rest[start + 1..start + end].trim_start_matches('*');
                match lookup(name) {
                    Some(v) if !v.is_empty() => text.push_str(&v),
                    _ => missing = true,
                }
                rest = &rest[start + end + 1..];
            }
            text.push_str(rest);
            if !missing && !text.is_empty() {
                out.push(text);
            }
        }
        format!("{}{}", self.base, out.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn published_templates_win_and_missing_values_drop_segments() {
        let data = json!({"locationServiceData": {"serviceDefinitions": [
            {"identifier": ids::SESSIONS, "serviceType": "distributedtask", "displayName": "sessions",
             "relativePath": "_apis/v1/Sessions/{poolId}/{sessionId}"}
        ]}});
        let loc = Locations::from_connection_data("http://h/tenant", Some(&data));
        assert_eq!(loc.url(ids::SESSIONS, &[("poolId", "1")]), "http://h/tenant/_apis/v1/Sessions/1");
        assert_eq!(
            loc.url(ids::MESSAGES, &[("poolId", "1"), ("messageId", "5")]),
            "http://h/tenant/_apis/distributedtask/pools/1/messages/5"
        );
        assert_eq!(
            loc.url(ids::RECORDS, &[("scopeIdentifier", "s"), ("hubName", "actions"), ("planId", "p"), ("timelineId", "t")]),
            "http://h/tenant/s/_apis/distributedtask/hubs/actions/plans/p/timelines/t/records"
        );
    }

    #[test]
    fn area_and_resource_come_from_the_definition() {
        let data = json!({"locationServiceData": {"serviceDefinitions": [
            {"identifier": ids::POOLS, "serviceType": "distributedtask", "displayName": "pools",
             "relativePath": "_apis/{area}/{resource}/{poolId}"}
        ]}});
        let loc = Locations::from_connection_data("http://h/t/", Some(&data));
        assert_eq!(loc.url(ids::POOLS, &[]), "http://h/t/_apis/distributedtask/pools");
    }
}
