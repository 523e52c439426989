//! A plugin's WebSocket exports under either contract it may be built
//! against: `switchyard:consumer@0.2.x` (the current one) or `@0.1.x`
//! (kept loading). The rest of the host calls them through one surface,
//! in the 0.2 types; a 0.1 guest gets them converted (the scope as the
//! 0.1 record, without the fields 0.2 added).

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Resource};

use crate::bindings::{
    Frame, Migration, MigrationIndices, WebsocketConsumer, WebsocketConsumerIndices, v0_1,
};
use crate::connection::Connection;
use crate::host_api_v0_1::frame_to_v0_1;
use crate::scope::ScopeInfo;
use crate::state::ConsumerState;

/// Where the `websocket-consumer` export is, by contract version.
#[derive(Clone)]
pub(crate) enum ConsumerIndices {
    V0_2(WebsocketConsumerIndices),
    V0_1(v0_1::WebsocketConsumerIndices),
}

impl ConsumerIndices {
    /// Finds the export, 0.2 first. The error is the 0.2 lookup's.
    pub(crate) fn new(pre: &InstancePre<ConsumerState>) -> wasmtime::Result<Self> {
        match WebsocketConsumerIndices::new(pre) {
            Ok(indices) => Ok(Self::V0_2(indices)),
            Err(err) => v0_1::WebsocketConsumerIndices::new(pre)
                .map(Self::V0_1)
                .map_err(|_| err),
        }
    }

    pub(crate) fn load(
        &self,
        store: &mut Store<ConsumerState>,
        instance: &Instance,
    ) -> wasmtime::Result<ConsumerExports> {
        Ok(match self {
            Self::V0_2(indices) => ConsumerExports::V0_2(indices.load(store, instance)?),
            Self::V0_1(indices) => ConsumerExports::V0_1(indices.load(store, instance)?),
        })
    }

    /// The contract the plugin was built against, for logs: `0.2` or `0.1`.
    pub(crate) fn contract(&self) -> &'static str {
        match self {
            Self::V0_2(_) => "0.2",
            Self::V0_1(_) => "0.1",
        }
    }
}

/// Where the optional `migration` export is, by contract version.
#[derive(Clone)]
pub(crate) enum MigrationIndicesAny {
    V0_2(MigrationIndices),
    V0_1(v0_1::MigrationIndices),
}

impl MigrationIndicesAny {
    /// The export, 0.2 first; none when the plugin lacks it.
    pub(crate) fn new(pre: &InstancePre<ConsumerState>) -> Option<Self> {
        MigrationIndices::new(pre)
            .map(Self::V0_2)
            .or_else(|_| v0_1::MigrationIndices::new(pre).map(Self::V0_1))
            .ok()
    }

    pub(crate) fn load(
        &self,
        store: &mut Store<ConsumerState>,
        instance: &Instance,
    ) -> wasmtime::Result<MigrationExports> {
        Ok(match self {
            Self::V0_2(indices) => MigrationExports::V0_2(indices.load(store, instance)?),
            Self::V0_1(indices) => MigrationExports::V0_1(indices.load(store, instance)?),
        })
    }
}

/// The `websocket-consumer` export of an instance.
pub(crate) enum ConsumerExports {
    V0_2(WebsocketConsumer),
    V0_1(v0_1::WebsocketConsumer),
}

impl ConsumerExports {
    /// `connect`. A 0.2 guest borrows the scope as a resource, lent for
    /// the call and deleted after it (an abandoned call leaves it in the
    /// table of an instance that is never called again); a 0.1 guest gets
    /// the record.
    pub(crate) async fn call_connect(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
        scope: ScopeInfo,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V0_2(guest) => {
                let lent = store.data_mut().host.connections.push(scope)?;
                let borrowed = Resource::new_borrow(lent.rep());
                let result = guest.call_connect(&mut *store, conn, borrowed).await;
                store.data_mut().host.connections.delete(lent)?;
                result
            }
            Self::V0_1(guest) => guest.call_connect(store, conn, &scope.into_v0_1()).await,
        }
    }

    pub(crate) async fn call_receive(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
        frame: Frame,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V0_2(guest) => guest.call_receive(store, conn, &frame).await,
            Self::V0_1(guest) => guest.call_receive(store, conn, &frame_to_v0_1(frame)).await,
        }
    }

    pub(crate) async fn call_event(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
        event: &str,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V0_2(guest) => guest.call_event(store, conn, event).await,
            Self::V0_1(guest) => guest.call_event(store, conn, event).await,
        }
    }

    pub(crate) async fn call_disconnect(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
        code: u16,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V0_2(guest) => guest.call_disconnect(store, conn, code).await,
            Self::V0_1(guest) => guest.call_disconnect(store, conn, code).await,
        }
    }
}

/// The `migration` export of an instance.
pub(crate) enum MigrationExports {
    V0_2(Migration),
    V0_1(v0_1::Migration),
}

impl MigrationExports {
    pub(crate) async fn call_snapshot(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
    ) -> wasmtime::Result<Vec<u8>> {
        match self {
            Self::V0_2(guest) => guest.call_snapshot(store, conn).await,
            Self::V0_1(guest) => guest.call_snapshot(store, conn).await,
        }
    }

    pub(crate) async fn call_restore(
        &self,
        store: &mut Store<ConsumerState>,
        conn: Resource<Connection>,
        state: &[u8],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::V0_2(guest) => guest.call_restore(store, conn, state).await,
            Self::V0_1(guest) => guest.call_restore(store, conn, state).await,
        }
    }
}
