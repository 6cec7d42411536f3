//! Leader election through a `coordination.k8s.io/v1` Lease, built so that two replicas can
//! never write at the same time.
//!
//! The rules are client-go's, and every time below is read from the monotonic clock of the
//! process that uses it — no replica ever compares its clock with a time another one wrote:
//!
//! - The leader renews every [`Timing::retry_period`]. It leads only until
//!   [`Timing::renew_deadline`] after it *sent* its last successful renewal; past that it stops:
//!   the [`WriteGate`] refuses every write of the operator's client at once, and
//!   [`LeaderElection::hold`] returns (the operator then exits).
//! - A standby records when it last saw the lease record change and takes over only when the
//!   record has stayed the same for the holder's `leaseDurationSeconds`.
//! - The standby's timer starts after the renewal reached the API server, so the leader's gate
//!   closes at least `lease_duration - renew_deadline` (5 s) before a standby may take over, even
//!   when the leader's process was paused (SIGSTOP, a stalled node) and resumes later.
//!
//! Updates carry the Lease's `resourceVersion`, so two replicas can never both win a write.
//! [`Elector`] is the pure state machine (the clock is an argument); [`LeaderElection`] drives it.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::client::ClientBuilder;
use kube::{Api, Client};
use tracing::{info, warn};

/// Durations of the election; the defaults are client-go's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, from the last change it saw, before it may take the lease.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader stops (shorter than the lease).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a replica reads from the Lease: enough to notice that it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub resource_version: Option<String>,
    /// The holder's `leaseDurationSeconds`.
    pub lease_duration: Option<Duration>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
            lease_duration: spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// The next thing a replica should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it with us as holder.
    Create,
    /// Write us as holder: a renewal (`takeover: false`) or taking a free or expired lease.
    Write { takeover: bool },
    /// Another replica holds the lease and was seen renewing within its duration.
    Wait,
    /// We led, and either could not renew within the renew deadline or another replica holds
    /// the lease now. Every write must already have stopped.
    Lost,
}

/// The election's state machine. Pure: it is given the time and the Lease it should act on.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The last lease record seen and when it was first seen in that state.
    observed: Option<(Record, Instant)>,
    /// While leading: when the last successful renewal was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, timing: Timing) -> Self {
        assert!(
            timing.renew_deadline < timing.lease_duration,
            "the renew deadline must be shorter than the lease duration"
        );
        Elector {
            identity: identity.into(),
            timing,
            observed: None,
            renewed_at: None,
        }
    }

    /// Whether we lead at `now`: a renewal sent less than the renew deadline ago succeeded.
    pub fn leads(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|at| now < at + self.timing.renew_deadline)
    }

    /// Decides what to do at `now` given the Lease as just read (`None`: it does not exist).
    pub fn decide(&mut self, now: Instant, lease: Option<&Record>) -> Step {
        if self.expire(now) {
            return Step::Lost;
        }
        let Some(record) = lease else {
            self.observed = None;
            return if self.renewed_at.take().is_some() {
                Step::Lost
            } else {
                Step::Create
            };
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(record) {
            self.observed = Some((record.clone(), now));
        }
        let ours = record.holder.as_deref() == Some(self.identity.as_str());
        if self.renewed_at.is_some() {
            return if ours {
                Step::Write { takeover: false }
            } else {
                self.renewed_at = None;
                Step::Lost
            };
        }
        // A record naming us that we did not write in this process: a restart of the same pod.
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let duration = record.lease_duration.unwrap_or(self.timing.lease_duration);
        if ours || record.holder.is_none() || now >= seen_at + duration {
            Step::Write { takeover: true }
        } else {
            Step::Wait
        }
    }

    /// Ends a leadership whose renew deadline passed at `now`; true if it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let ended = self.renewed_at.is_some() && !self.leads(now);
        if ended {
            self.renewed_at = None;
        }
        ended
    }

    /// A write sent at `sent_at` succeeded: we lead until the returned instant.
    pub fn succeeded(&mut self, sent_at: Instant) -> Instant {
        self.renewed_at = Some(sent_at);
        self.observed = None;
        sent_at + self.timing.renew_deadline
    }
}

/// Lets the operator's writes through only while this replica leads. Shared by the election
/// (which moves the deadline) and the client layer (which checks it on every request).
#[derive(Clone, Debug)]
pub struct WriteGate(Arc<Mutex<Gate>>);

#[derive(Debug)]
enum Gate {
    /// No election (a single replica): always open.
    Open,
    /// Open until this instant (`None`: closed).
    Until(Option<Instant>),
}

impl WriteGate {
    /// Always open: for `--no-leader-election`.
    pub fn open() -> Self {
        WriteGate(Arc::new(Mutex::new(Gate::Open)))
    }

    /// Closed until the election opens it.
    pub fn closed() -> Self {
        WriteGate(Arc::new(Mutex::new(Gate::Until(None))))
    }

    fn open_until(&self, until: Instant) {
        *self.0.lock().expect("gate lock") = Gate::Until(Some(until));
    }

    fn close(&self) {
        *self.0.lock().expect("gate lock") = Gate::Until(None);
    }

    /// Whether a write may leave the process at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        match *self.0.lock().expect("gate lock") {
            Gate::Open => true,
            Gate::Until(until) => until.is_some_and(|u| now < u),
        }
    }
}

/// The error a write gets when this replica does not lead.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: writes are stopped until this replica holds the Lease")]
pub struct NotLeader;

/// Tower layer that refuses mutating requests while the [`WriteGate`] is closed.
#[derive(Clone)]
pub struct GateLayer(pub WriteGate);

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: WriteGate,
}

/// Reads (GET, LIST, WATCH) always pass; everything else is a write.
fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_write(req.method()) && !self.gate.allows(Instant::now()) {
            return Box::pin(futures::future::ready(Err(NotLeader.into())));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// The operator's two clients from the usual config (`KUBECONFIG` or in-cluster): the first,
/// for the controllers, sends writes only while `gate` is open; the second is the election's
/// own. Both send the user agent `unified-connectors/<version> (<identity>)`, so the API
/// server's audit log tells replicas apart.
pub async fn clients(identity: &str, gate: WriteGate) -> anyhow::Result<(Client, Client)> {
    let mut config = kube::Config::infer().await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!(
            "unified-connectors/{} ({identity})",
            env!("CARGO_PKG_VERSION")
        ))?,
    ));
    let election = Client::try_from(config.clone())?;
    let gated = ClientBuilder::try_from(config)?
        .with_layer(&GateLayer(gate))
        .build();
    Ok((gated, election))
}

/// Drives an [`Elector`] against the API server and keeps the [`WriteGate`] in step.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    elector: Mutex<Elector>,
    gate: WriteGate,
}

impl LeaderElection {
    /// `client` must be ungated (the election writes the Lease before it leads); `gate` is the
    /// one the controllers' client checks.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        gate: WriteGate,
    ) -> Self {
        let timing = Timing::default();
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            elector: Mutex::new(Elector::new(identity.clone(), timing)),
            identity,
            timing,
            gate,
        }
    }

    /// Waits until this replica holds the lease; the gate is open when it returns.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.attempt().await {
                Ok(Step::Create | Step::Write { .. }) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(_) => {
                    if !announced {
                        info!(lease = %self.name, "another replica leads; standing by");
                        announced = true;
                    }
                }
                Err(e) => warn!(lease = %self.name, error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the lease until leadership is lost, then returns with the gate closed. The caller
    /// must stop (exit): the controllers' writes are refused from then on.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.attempt().await {
                Ok(Step::Lost) => {
                    warn!(lease = %self.name, "leadership lost: writes stopped");
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "could not renew the lease"),
            }
        }
    }

    /// One round: read the Lease, decide, write if so decided. Returns the step that *took
    /// effect*: `Create`/`Write` only when the write succeeded (we lead), `Wait` when it lost a
    /// race, `Lost` when leadership ended (gate closed).
    async fn attempt(&self) -> anyhow::Result<Step> {
        // Never wait on the API server past the point where we would have to stop anyway.
        let budget = self.timing.renew_deadline;
        let result = tokio::time::timeout(budget, self.round()).await;
        let step = match result {
            Ok(r) => r?,
            Err(_)
                if self
                    .elector
                    .lock()
                    .expect("elector lock")
                    .expire(Instant::now()) =>
            {
                Step::Lost
            }
            Err(_) => anyhow::bail!("the API server did not answer within {budget:?}"),
        };
        if step == Step::Lost {
            self.gate.close();
        }
        Ok(step)
    }

    async fn round(&self) -> anyhow::Result<Step> {
        let lease = self.api.get_opt(&self.name).await?;
        let record = lease.as_ref().map(Record::of);
        let sent_at = Instant::now();
        let step = self
            .elector
            .lock()
            .expect("elector lock")
            .decide(sent_at, record.as_ref());
        let written = match (step, lease) {
            (Step::Create, _) => self.create().await?,
            (Step::Write { takeover }, Some(lease)) => self.write(lease, takeover).await?,
            (Step::Lost, _) => {
                self.gate.close();
                return Ok(Step::Lost);
            }
            _ => return Ok(step),
        };
        if !written {
            return Ok(Step::Wait);
        }
        let until = self
            .elector
            .lock()
            .expect("elector lock")
            .succeeded(sent_at);
        self.gate.open_until(until);
        Ok(step)
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: acquired.or(Some(now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// `Ok(false)`: another replica created it first.
    async fn create(&self) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(self.spec(0, None)),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `Ok(false)`: the Lease changed since we read it (`replace` sends its resourceVersion).
    async fn write(&self, mut lease: Lease, takeover: bool) -> Result<bool, kube::Error> {
        let current = lease.spec.clone().unwrap_or_default();
        let ours = current.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = current.lease_transitions.unwrap_or(0) + i32::from(takeover && !ours);
        lease.spec = Some(self.spec(transitions, if ours { current.acquire_time } else { None }));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on a clean shutdown, so a standby takes over at once instead of after
    /// the lease duration. Closes the gate first: nothing is written after the release.
    pub async fn release(&self) {
        self.gate.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        if let Some(spec) = lease
            .spec
            .as_mut()
            .filter(|s| s.holder_identity.as_deref() == Some(self.identity.as_str()))
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                warn!(lease = %self.name, error = %e, "could not release the lease");
            } else {
                info!(lease = %self.name, "released the lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn record(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(String::from),
            renew_time: Some(renew.into()),
            resource_version: Some(renew.into()),
            lease_duration: Some(secs(15)),
        }
    }

    #[test]
    fn a_standby_takes_over_only_after_the_record_stood_still_for_the_lease_duration() {
        let t0 = Instant::now();
        let mut b = Elector::new("b", Timing::default());
        // The renewTime is a time on another clock: it is never compared with ours, so even a
        // record "from the past" counts from when we first saw it.
        let r1 = record(Some("a"), "1970-01-01T00:00:00Z");
        assert_eq!(b.decide(t0, Some(&r1)), Step::Wait);
        assert_eq!(b.decide(t0 + secs(14), Some(&r1)), Step::Wait);
        // The holder renewed: the wait starts again from this observation.
        let r2 = record(Some("a"), "1970-01-01T00:00:14Z");
        assert_eq!(b.decide(t0 + secs(14), Some(&r2)), Step::Wait);
        assert_eq!(b.decide(t0 + secs(28), Some(&r2)), Step::Wait);
        assert_eq!(
            b.decide(t0 + secs(29), Some(&r2)),
            Step::Write { takeover: true }
        );
    }

    #[test]
    fn a_free_or_missing_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut b = Elector::new("b", Timing::default());
        assert_eq!(b.decide(t0, None), Step::Create);
        assert_eq!(
            b.decide(t0, Some(&record(None, "x"))),
            Step::Write { takeover: true }
        );
    }

    #[test]
    fn the_leader_stops_at_the_renew_deadline_before_a_standby_may_take_over() {
        let timing = Timing::default();
        let t0 = Instant::now();
        let mut a = Elector::new("a", timing);
        let mut b = Elector::new("b", timing);
        assert_eq!(a.decide(t0, None), Step::Create);
        let until = a.succeeded(t0);
        assert_eq!(until, t0 + timing.renew_deadline);
        // The standby sees the record only after the leader sent it.
        let r = record(Some("a"), "t0");
        assert_eq!(b.decide(t0 + secs(1), Some(&r)), Step::Wait);
        // The leader is paused from t0 + 1 s and wakes up 30 s later: its first decision is
        // that it lost, without another read or write.
        assert!(a.leads(t0 + secs(9)));
        assert!(!a.leads(t0 + secs(10)));
        assert_eq!(a.decide(t0 + secs(31), Some(&r)), Step::Lost);
        // Meanwhile the standby took over no earlier than 16 s after t0, when the leader had
        // stopped for 6 s already.
        assert_eq!(b.decide(t0 + secs(15), Some(&r)), Step::Wait);
        assert_eq!(
            b.decide(t0 + secs(16), Some(&r)),
            Step::Write { takeover: true }
        );
        assert!(!a.leads(t0 + secs(16)));
    }

    #[test]
    fn a_leader_renews_while_it_can_and_loses_when_another_holds_the_lease() {
        let t0 = Instant::now();
        let mut a = Elector::new("a", Timing::default());
        a.succeeded(t0);
        let mine = record(Some("a"), "t0");
        assert_eq!(
            a.decide(t0 + secs(2), Some(&mine)),
            Step::Write { takeover: false }
        );
        a.succeeded(t0 + secs(2));
        // Renewals failed for a while but the deadline counts from the last success.
        assert!(a.leads(t0 + secs(11)));
        assert_eq!(a.decide(t0 + secs(12), Some(&mine)), Step::Lost);
        // After losing it is a standby like any other.
        assert_eq!(
            a.decide(t0 + secs(13), Some(&record(Some("b"), "t13"))),
            Step::Wait
        );

        let mut c = Elector::new("c", Timing::default());
        c.succeeded(t0);
        assert_eq!(
            c.decide(t0 + secs(1), Some(&record(Some("b"), "t1"))),
            Step::Lost
        );
        assert!(!c.leads(t0 + secs(1)));
    }

    #[test]
    fn the_gate_passes_writes_only_until_the_deadline() {
        let t0 = Instant::now();
        let gate = WriteGate::closed();
        assert!(!gate.allows(t0));
        gate.open_until(t0 + secs(10));
        assert!(gate.allows(t0 + secs(9)));
        assert!(!gate.allows(t0 + secs(10)));
        gate.close();
        assert!(!gate.allows(t0));
        assert!(WriteGate::open().allows(t0 + secs(1_000_000)));
        assert!(is_write(&http::Method::PATCH) && is_write(&http::Method::DELETE));
        assert!(!is_write(&http::Method::GET));
    }

    #[tokio::test]
    async fn the_gated_service_refuses_writes_without_reaching_the_server() {
        use tower::{Layer, Service};
        let reached = Arc::new(Mutex::new(Vec::new()));
        let inner = {
            let reached = reached.clone();
            tower::service_fn(move |req: http::Request<()>| {
                reached.lock().unwrap().push(req.method().clone());
                futures::future::ready(Ok::<_, std::convert::Infallible>(()))
            })
        };
        let gate = WriteGate::closed();
        let mut svc = GateLayer(gate.clone()).layer(inner);
        let req = |m: http::Method| http::Request::builder().method(m).body(()).unwrap();
        assert!(svc.call(req(http::Method::GET)).await.is_ok());
        let refused = svc.call(req(http::Method::PATCH)).await.unwrap_err();
        assert!(refused.is::<NotLeader>(), "{refused}");
        gate.open_until(Instant::now() + secs(10));
        assert!(svc.call(req(http::Method::PATCH)).await.is_ok());
        assert_eq!(
            *reached.lock().unwrap(),
            vec![http::Method::GET, http::Method::PATCH]
        );
    }
}
