//! Services, EndpointSlices and address pools: the typed methods of their routes
//! (`/v1/services/{namespace}/{name}`, `/v1/endpointslices/{namespace}/{name}`,
//! `/v1/addresspools/{name}`).

use hyper::Method;
use seam_model::{AddressPool, EndpointSlice, ObjectKind, Service};

use crate::client::{encode, object_path, ControllerClient};
use crate::error::Result;
use crate::transport::encode_segment;

/// The path of a namespaced object: each part encoded on its own.
fn namespaced_path(kind: ObjectKind, namespace: &str, name: &str) -> String {
    format!(
        "/v1/{}/{}/{}",
        kind.plural(),
        encode_segment(namespace),
        encode_segment(name)
    )
}

impl ControllerClient {
    /// `GET /v1/services`.
    pub async fn list_services(&self) -> Result<Vec<Service>> {
        self.list(ObjectKind::Service, "Service list").await
    }

    /// `GET /v1/services/{namespace}/{name}`.
    pub async fn get_service(&self, namespace: &str, name: &str) -> Result<Service> {
        let path = namespaced_path(ObjectKind::Service, namespace, name);
        self.call(Method::GET, path, None, "Service").await
    }

    /// `PUT /v1/services/{namespace}/{name}`: creates or replaces a Service; answers it as
    /// stored, its ClusterIP, node ports and LoadBalancer address (or the condition saying why
    /// it has none yet) filled in.
    pub async fn put_service(&self, service: &Service) -> Result<Service> {
        let path = namespaced_path(ObjectKind::Service, &service.namespace, &service.name);
        self.call(Method::PUT, path, Some(encode(service)?), "Service")
            .await
    }

    /// `DELETE /v1/services/{namespace}/{name}`: frees what the Service held.
    pub async fn delete_service(&self, namespace: &str, name: &str) -> Result<()> {
        let path = namespaced_path(ObjectKind::Service, namespace, name);
        self.call_unit(Method::DELETE, path, None).await
    }

    /// `GET /v1/endpointslices`.
    pub async fn list_endpoint_slices(&self) -> Result<Vec<EndpointSlice>> {
        self.list(ObjectKind::EndpointSlice, "EndpointSlice list")
            .await
    }

    /// `GET /v1/endpointslices/{namespace}/{name}`.
    pub async fn get_endpoint_slice(&self, namespace: &str, name: &str) -> Result<EndpointSlice> {
        let path = namespaced_path(ObjectKind::EndpointSlice, namespace, name);
        self.call(Method::GET, path, None, "EndpointSlice").await
    }

    /// `PUT /v1/endpointslices/{namespace}/{name}`: creates or replaces an EndpointSlice.
    pub async fn put_endpoint_slice(&self, slice: &EndpointSlice) -> Result<EndpointSlice> {
        let path = namespaced_path(ObjectKind::EndpointSlice, &slice.namespace, &slice.name);
        self.call(Method::PUT, path, Some(encode(slice)?), "EndpointSlice")
            .await
    }

    /// `DELETE /v1/endpointslices/{namespace}/{name}`.
    pub async fn delete_endpoint_slice(&self, namespace: &str, name: &str) -> Result<()> {
        let path = namespaced_path(ObjectKind::EndpointSlice, namespace, name);
        self.call_unit(Method::DELETE, path, None).await
    }

    /// `GET /v1/addresspools`.
    pub async fn list_address_pools(&self) -> Result<Vec<AddressPool>> {
        self.list(ObjectKind::AddressPool, "AddressPool list").await
    }

    /// `GET /v1/addresspools/{name}`.
    pub async fn get_address_pool(&self, name: &str) -> Result<AddressPool> {
        let path = object_path(ObjectKind::AddressPool, name);
        self.call(Method::GET, path, None, "AddressPool").await
    }

    /// `PUT /v1/addresspools/{name}`: creates or replaces an address pool; pending
    /// LoadBalancer Services are given addresses from it right after.
    pub async fn put_address_pool(&self, pool: &AddressPool) -> Result<AddressPool> {
        let path = object_path(ObjectKind::AddressPool, &pool.name);
        self.call(Method::PUT, path, Some(encode(pool)?), "AddressPool")
            .await
    }

    /// `DELETE /v1/addresspools/{name}`: refused (409) while Services hold its addresses.
    pub async fn delete_address_pool(&self, name: &str) -> Result<()> {
        let path = object_path(ObjectKind::AddressPool, name);
        self.call_unit(Method::DELETE, path, None).await
    }
}
