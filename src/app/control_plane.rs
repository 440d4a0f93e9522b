//! Where membership meets the aqueduct's controller: the controller keeps membership's member
//! book ([`DynamicMembers`]) as a [`MemberBook`], and membership drives the controller as a
//! [`ControlPlane`]. Neither layer imports the other; this is the only place that knows both.

use crate::aqueduct::controller::Controller;
use crate::aqueduct::member_book::{BookChange, MemberBook};
use crate::config::Config;
use crate::haproxy::render::RenderMembers;
use crate::haproxy::stat::ServerStateRow;
use crate::membership::control_plane::{ControlPlane, Pending, ServersByBackend};
use crate::membership::members::{DynamicMembers, OthersJoining};
use crate::registry::model::Registration;
use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;

impl MemberBook for DynamicMembers {
    fn render_members(&self, config: &Config) -> RenderMembers {
        DynamicMembers::render_members(self, config)
    }

    fn registrations(&self, backend_key: &str) -> Vec<Registration> {
        DynamicMembers::registrations(self, backend_key)
    }

    fn backend_keys(&self) -> Vec<String> {
        DynamicMembers::backend_keys(self)
            .map(str::to_owned)
            .collect()
    }

    fn remove_backend(&mut self, backend_key: &str) {
        DynamicMembers::remove_backend(self, backend_key);
    }

    fn snapshot(&self) -> Box<dyn MemberBook> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The controller's book as membership's own type. The application starts every controller
/// that membership drives with a [`DynamicMembers`] book (`app::aqueduct`), so the other case
/// is a wiring mistake: it is logged, and the change is not made.
fn dynamic(book: &mut dyn MemberBook) -> Option<&mut DynamicMembers> {
    let members = book.as_any_mut().downcast_mut::<DynamicMembers>();
    if members.is_none() {
        tracing::error!("membership drives a controller started without its member book");
    }
    members
}

fn dynamic_ref(book: &dyn MemberBook) -> Option<&DynamicMembers> {
    book.as_any().downcast_ref::<DynamicMembers>()
}

impl ControlPlane for Controller {
    fn config(&self) -> Arc<Config> {
        Controller::config(self)
    }

    fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        Controller::subscribe(self)
    }

    fn set_members_of(&self, changes: Vec<(String, Vec<Registration>)>) -> Pending<'_, ()> {
        Box::pin(self.update_members(move |book, _| {
            let Some(members) = dynamic(book) else {
                return BookChange::default();
            };
            for (backend_key, registrations) in changes {
                members.set(&backend_key, registrations);
            }
            BookChange::members()
        }))
    }

    fn observe_servers<'a>(
        &'a self,
        backends: &'a BTreeSet<String>,
        rows: &'a [ServerStateRow],
    ) -> Pending<'a, ()> {
        Box::pin(self.update_members(move |book, config| {
            BookChange::rendering(
                dynamic(book).is_some_and(|m| m.observe_rows(config, backends, rows)),
            )
        }))
    }

    fn out_of_service<'a>(&'a self, servers: &'a ServersByBackend) -> Pending<'a, ()> {
        Box::pin(self.update_members(move |book, _| {
            let mut changed = false;
            if let Some(members) = dynamic(book) {
                for (backend_key, names) in servers {
                    changed |= members.out_of_service(backend_key, names);
                }
            }
            BookChange::rendering(changed)
        }))
    }

    fn set_phases(&self, joining: BTreeSet<String>, serving: BTreeSet<String>) -> Pending<'_, ()> {
        Box::pin(self.update_members(move |book, _| {
            if let Some(members) = dynamic(book) {
                members.set_phases(joining, serving);
            }
            // Even when the sets look the same: a static member a reload rendered `disabled`
            // was never in them, and is now ready; the served text must say so.
            BookChange::rendering(true)
        }))
    }

    fn render_members(&self) -> RenderMembers {
        self.read_members(|book, config| book.render_members(config))
    }

    fn backends_with_members(&self) -> BTreeSet<String> {
        Controller::backends_with_members(self)
    }

    fn may_be_joining(&self, server: &str) -> bool {
        self.read_members(|book, _| dynamic_ref(book).is_none_or(|m| m.may_be_joining(server)))
    }

    fn others_joining(&self, backend_key: &str, except: &str) -> OthersJoining {
        self.read_members(|book, _| {
            dynamic_ref(book).map_or(OthersJoining::None, |m| {
                m.others_joining(backend_key, except)
            })
        })
    }

    fn reload_members<'a>(&'a self, reason: &'a str) -> Pending<'a, Result<(), String>> {
        Box::pin(async move {
            Controller::reload_members(self, reason)
                .await
                .map_err(|err| err.to_string())
        })
    }
}
