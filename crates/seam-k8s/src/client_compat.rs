//! TEMPORARY: the Service and EndpointSlice calls of seam-client (issue 12, helper CONTROLLER's
//! `crates/seam-client/src/services.rs`, pinned in design-12.md) as an extension trait over
//! `request_raw`, until they are on this branch; the inherent methods then take precedence and
//! this module goes.

use seam_client::{ClientError, ControllerClient};
use serde::de::DeserializeOwned;

type Result<T> = std::result::Result<T, ClientError>;

/// `services` and `endpointslices` routes.
#[allow(async_fn_in_trait)]
pub(crate) trait ServicesApi {
    async fn list_services(&self) -> Result<Vec<seam_model::Service>>;
    async fn put_service(&self, service: &seam_model::Service) -> Result<seam_model::Service>;
    async fn delete_service(&self, namespace: &str, name: &str) -> Result<()>;
    async fn list_endpoint_slices(&self) -> Result<Vec<seam_model::EndpointSlice>>;
    async fn put_endpoint_slice(
        &self,
        slice: &seam_model::EndpointSlice,
    ) -> Result<seam_model::EndpointSlice>;
    async fn delete_endpoint_slice(&self, namespace: &str, name: &str) -> Result<()>;
}

async fn call<T: DeserializeOwned>(
    client: &ControllerClient,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Option<T>> {
    let response = client.request_raw(method, path, body).await?;
    if !(200..300).contains(&response.status) {
        let parsed: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let text = |f: &str| {
            parsed
                .get(f)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(ClientError::Api {
            endpoint: client.endpoint().to_string(),
            request: format!("{method} {path}"),
            status: response.status,
            reason: text("reason"),
            message: text("message"),
        });
    }
    if method == "DELETE" {
        return Ok(None);
    }
    serde_json::from_slice(&response.body)
        .map(Some)
        .map_err(|source| ClientError::Decode {
            endpoint: client.endpoint().to_string(),
            request: format!("{method} {path}"),
            what: path.to_string(),
            source,
        })
}

fn missing() -> ClientError {
    ClientError::Transport {
        endpoint: String::new(),
        request: String::new(),
        source: "empty answer".into(),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl ServicesApi for ControllerClient {
    async fn list_services(&self) -> Result<Vec<seam_model::Service>> {
        call(self, "GET", "/v1/services", Vec::new())
            .await?
            .ok_or_else(missing)
    }
    async fn put_service(&self, service: &seam_model::Service) -> Result<seam_model::Service> {
        let path = format!("/v1/services/{}/{}", service.namespace, service.name);
        call(self, "PUT", &path, encode(service))
            .await?
            .ok_or_else(missing)
    }
    async fn delete_service(&self, namespace: &str, name: &str) -> Result<()> {
        let path = format!("/v1/services/{namespace}/{name}");
        call::<serde_json::Value>(self, "DELETE", &path, Vec::new())
            .await
            .map(drop)
    }
    async fn list_endpoint_slices(&self) -> Result<Vec<seam_model::EndpointSlice>> {
        call(self, "GET", "/v1/endpointslices", Vec::new())
            .await?
            .ok_or_else(missing)
    }
    async fn put_endpoint_slice(
        &self,
        slice: &seam_model::EndpointSlice,
    ) -> Result<seam_model::EndpointSlice> {
        let path = format!("/v1/endpointslices/{}/{}", slice.namespace, slice.name);
        call(self, "PUT", &path, encode(slice))
            .await?
            .ok_or_else(missing)
    }
    async fn delete_endpoint_slice(&self, namespace: &str, name: &str) -> Result<()> {
        let path = format!("/v1/endpointslices/{namespace}/{name}");
        call::<serde_json::Value>(self, "DELETE", &path, Vec::new())
            .await
            .map(drop)
    }
}
