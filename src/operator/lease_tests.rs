//! The election against a mock API server (the shape of kube-rs/controller-rs
//! src/fixtures.rs): each test checks every request the elector sends — method, path,
//! the Lease body — and answers it. Time is paused wherever the loop runs, so renewal
//! periods and timeouts pass deterministically.

use super::*;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::core::Status;
use tower_test::mock::{Handle, SendResponse};

const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases/sluice-operator";
/// Longer than any wait in these tests, so only a request that never comes trips it.
const PATIENCE: Duration = Duration::from_secs(600);

fn settings() -> LeaseSettings {
    LeaseSettings::new("sluice", "pod-a")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + seconds).unwrap()
}

/// A Lease as the API server would return it.
fn stored(holder: &str, renewed: Timestamp, version: &str, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(DEFAULT_NAME.into()),
            namespace: Some("sluice".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()).filter(|h: &String| !h.is_empty()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

fn spec(lease: &Lease) -> &LeaseSpec {
    lease.spec.as_ref().expect("a Lease with a spec")
}

/// The test's end of the API server.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

fn mock() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer(handle))
}

fn lease_api(client: kube::Client) -> Api<Lease> {
    Api::namespaced(client, "sluice")
}

impl ApiServer {
    async fn next(&mut self, method: Method, path: &str) -> (Option<Lease>, Answer) {
        let (request, send) = tokio::time::timeout(PATIENCE, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {method} {path}"))
            .unwrap_or_else(|| panic!("client gone before {method} {path}"));
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
        (body, Answer(send))
    }

    async fn get(&mut self) -> Answer {
        self.next(Method::GET, LEASE).await.1
    }

    async fn put(&mut self) -> (Lease, Answer) {
        let (body, answer) = self.next(Method::PUT, LEASE).await;
        (body.expect("a PUT with a Lease"), answer)
    }

    async fn post(&mut self) -> (Lease, Answer) {
        let (body, answer) = self.next(Method::POST, COLLECTION).await;
        (body.expect("a POST with a Lease"), answer)
    }

    /// Fails if the client sends anything more before it is dropped.
    async fn no_more_requests(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected {} {}", request.method(), request.uri());
        }
    }
}

struct Answer(SendResponse<Response<Body>>);

impl Answer {
    fn lease(self, lease: &Lease) {
        let body = Body::from(serde_json::to_vec(lease).unwrap());
        self.0
            .send_response(Response::builder().body(body).unwrap());
    }

    fn status(self, code: StatusCode, reason: &str) {
        let status = Status::failure(reason, reason).with_code(code.as_u16());
        let body = Body::from(serde_json::to_vec(&status).unwrap());
        self.0
            .send_response(Response::builder().status(code).body(body).unwrap());
    }
}

/// One round at `now` while `serve` plays the API server (and hands it back); then the
/// client must send nothing more.
async fn round<F: Future<Output = ApiServer>>(
    now: Timestamp,
    serve: impl FnOnce(ApiServer) -> F,
) -> Result<bool, LeaseError> {
    let (client, server) = mock();
    let api = lease_api(client);
    let settings = settings();
    let (result, server) = tokio::join!(try_acquire_or_renew(&api, &settings, now), serve(server));
    drop(api);
    server.no_more_requests().await;
    result
}

/// What the API server stores from a write: the body, at a new `resourceVersion`.
fn saved(mut lease: Lease, version: &str) -> Lease {
    lease.metadata.resource_version = Some(version.into());
    lease
}

#[tokio::test]
async fn creates_a_missing_lease_and_leads() {
    let now = at(0);
    let led = round(now, |mut server| async move {
        server.get().await.status(StatusCode::NOT_FOUND, "NotFound");
        let (lease, answer) = server.post().await;
        assert_eq!(lease.metadata.name.as_deref(), Some(DEFAULT_NAME));
        let spec = spec(&lease);
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(0));
        answer.lease(&saved(lease, "1"));
        server
    });
    assert!(led.await.unwrap());
}

#[tokio::test]
async fn loses_the_race_to_create() {
    let led = round(at(0), |mut server| async move {
        server.get().await.status(StatusCode::NOT_FOUND, "NotFound");
        server
            .post()
            .await
            .1
            .status(StatusCode::CONFLICT, "AlreadyExists");
        server
    });
    assert!(!led.await.unwrap());
}

#[tokio::test]
async fn follows_a_fresh_lease_of_another_without_writing() {
    // Renewed at 0 for 15 s: at 14 s it still holds.
    let led = round(at(14), |mut server| async move {
        server.get().await.lease(&stored("pod-b", at(0), "7", 3));
        server
    });
    assert!(!led.await.unwrap());
}

#[tokio::test]
async fn takes_over_an_expired_lease() {
    let now = at(15);
    let led = round(now, |mut server| async move {
        server.get().await.lease(&stored("pod-b", at(0), "7", 3));
        let (lease, answer) = server.put().await;
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("7"));
        let spec = spec(&lease);
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(4));
        answer.lease(&saved(lease, "8"));
        server
    });
    assert!(led.await.unwrap());
}

#[tokio::test]
async fn takes_over_a_released_lease_at_once() {
    let led = round(at(1), |mut server| async move {
        server.get().await.lease(&stored("", at(0), "7", 3));
        let (lease, answer) = server.put().await;
        assert_eq!(spec(&lease).holder_identity.as_deref(), Some("pod-a"));
        answer.lease(&saved(lease, "8"));
        server
    });
    assert!(led.await.unwrap());
}

#[tokio::test]
async fn loses_a_takeover_race_to_a_conflict() {
    let led = round(at(30), |mut server| async move {
        server.get().await.lease(&stored("pod-b", at(0), "7", 3));
        server
            .put()
            .await
            .1
            .status(StatusCode::CONFLICT, "Conflict");
        server
    });
    assert!(!led.await.unwrap());
}

#[tokio::test]
async fn renews_its_own_lease() {
    let now = at(5);
    let led = round(now, |mut server| async move {
        server.get().await.lease(&stored("pod-a", at(0), "7", 2));
        let (lease, answer) = server.put().await;
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("7"));
        let spec = spec(&lease);
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(2));
        answer.lease(&saved(lease, "8"));
        server
    });
    assert!(led.await.unwrap());
}

#[tokio::test]
async fn a_conflicting_renewal_means_following() {
    let led = round(at(5), |mut server| async move {
        server.get().await.lease(&stored("pod-a", at(0), "7", 2));
        server
            .put()
            .await
            .1
            .status(StatusCode::CONFLICT, "Conflict");
        server
    });
    assert!(!led.await.unwrap());
}

#[tokio::test]
async fn an_api_error_is_an_error() {
    let led = round(at(0), |mut server| async move {
        server
            .get()
            .await
            .status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        server
    });
    let error = led.await.unwrap_err();
    assert!(
        matches!(
            error,
            LeaseError::Api {
                op: LeaseOp::Read,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_times_out() {
    let (client, mut server) = mock();
    let api = lease_api(client);
    let settings = settings();
    // The answer is held, never sent, until the round has given up.
    let (led, _unanswered) =
        tokio::join!(try_acquire_or_renew(&api, &settings, at(0)), server.get());
    let error = led.unwrap_err();
    assert!(
        matches!(error, LeaseError::Timeout { op: LeaseOp::Read, after, .. } if after == settings.renew_every),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn leads_renews_and_releases_on_stop() {
    let (client, mut server) = mock();
    let stop = CancellationToken::new();
    let (mut leadership, task) = spawn(client, settings(), stop.clone());
    assert!(!leadership.is_leader());

    server.get().await.status(StatusCode::NOT_FOUND, "NotFound");
    let (created, answer) = server.post().await;
    answer.lease(&saved(created, "1"));
    assert!(leadership.changed().await);
    let led_at = Instant::now();

    server.get().await.lease(&stored("pod-a", at(0), "1", 0));
    assert_eq!(led_at.elapsed(), settings().renew_every);
    let (renewed, answer) = server.put().await;
    assert_eq!(renewed.metadata.resource_version.as_deref(), Some("1"));
    answer.lease(&saved(renewed, "2"));

    stop.cancel();
    server.get().await.lease(&stored("pod-a", at(5), "2", 0));
    // By the time it lets go, it has stopped leading.
    assert!(!leadership.is_leader());
    let (released, answer) = server.put().await;
    assert_eq!(released.metadata.resource_version.as_deref(), Some("2"));
    assert_eq!(spec(&released).holder_identity, None);
    answer.lease(&saved(released, "3"));
    task.await.unwrap();
    assert!(!leadership.is_leader());
    server.no_more_requests().await;
}

/// How the API server fails a leader in [`steps_down_when_it_cannot_renew`].
#[derive(Clone, Copy, Debug)]
enum Outage {
    Errors,
    Silence,
}

async fn steps_down_when_it_cannot_renew(outage: Outage) {
    let (client, mut server) = mock();
    let stop = CancellationToken::new();
    let (mut leadership, task) = spawn(client, settings(), stop.clone());
    server.get().await.status(StatusCode::NOT_FOUND, "NotFound");
    let (created, answer) = server.post().await;
    answer.lease(&saved(created, "1"));
    assert!(leadership.changed().await);
    server.get().await.lease(&stored("pod-a", at(0), "1", 0));
    let (renewed, answer) = server.put().await;
    answer.lease(&saved(renewed, "2"));
    let renewed_at = Instant::now();

    let failing = tokio::spawn(async move {
        let mut unanswered = Vec::new();
        let mut calls = 0;
        while let Some((_, send)) = server.0.next_request().await {
            calls += 1;
            match outage {
                Outage::Errors => {
                    Answer(send).status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
                }
                Outage::Silence => unanswered.push(send),
            }
        }
        calls
    });
    assert!(!leadership.changed().await);
    let s = settings();
    let led_for = renewed_at.elapsed();
    assert!(
        led_for >= s.duration - s.renew_every && led_for < s.duration,
        "{outage:?}: led {led_for:?} after the last renewal of a {:?} lease",
        s.duration
    );
    stop.cancel();
    task.await.unwrap();
    // At least one failed renewal, and the attempt to release.
    assert!(failing.await.unwrap() >= 2);
}

#[tokio::test(start_paused = true)]
async fn steps_down_when_renewals_fail() {
    steps_down_when_it_cannot_renew(Outage::Errors).await;
}

#[tokio::test(start_paused = true)]
async fn steps_down_when_renewals_go_unanswered() {
    steps_down_when_it_cannot_renew(Outage::Silence).await;
}

#[tokio::test(start_paused = true)]
async fn a_fixed_leadership_never_changes() {
    let mut leadership = Leadership::fixed(true);
    assert!(leadership.is_leader());
    let change = tokio::time::timeout(Duration::from_secs(3600), leadership.changed()).await;
    assert!(change.is_err());
}
