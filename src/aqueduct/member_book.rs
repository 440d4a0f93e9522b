//! The controller's view of the members of dynamic backends. Membership owns them (who is a
//! member, each one's stable server id, what a takeover inherited: `membership::members`); the
//! controller keeps the book under its apply lock, renders from it on every reload and lists
//! from it in the API's rows, and never looks inside.

use crate::config::Config;
use crate::haproxy::render::RenderMembers;
use crate::registry::model::Registration;
use std::any::Any;

/// What the controller needs of the members of dynamic backends.
pub trait MemberBook: Send + Sync + 'static {
    /// The members of the dynamic backends of `config`, with their server ids, as the config
    /// renders them.
    fn render_members(&self, config: &Config) -> RenderMembers;
    /// A backend's registrations, as the API lists them.
    fn registrations(&self, backend_key: &str) -> Vec<Registration>;
    /// The backends that hold members.
    fn backend_keys(&self) -> Vec<String>;
    /// Forgets a deleted backend's members.
    fn remove_backend(&mut self, backend_key: &str);
    /// A copy to read from once the controller's lock is released.
    fn snapshot(&self) -> Box<dyn MemberBook>;
    /// For the owner of the book (the membership side, through the application's wiring),
    /// which knows its concrete type.
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The book of a controller without membership (an API on its own): no dynamic members.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMembers;

impl MemberBook for NoMembers {
    fn render_members(&self, _config: &Config) -> RenderMembers {
        RenderMembers::new()
    }

    fn registrations(&self, _backend_key: &str) -> Vec<Registration> {
        Vec::new()
    }

    fn backend_keys(&self) -> Vec<String> {
        Vec::new()
    }

    fn remove_backend(&mut self, _backend_key: &str) {}

    fn snapshot(&self) -> Box<dyn MemberBook> {
        Box::new(NoMembers)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// What a change to the book did, so the controller knows what to redo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookChange {
    /// The rendered text must be rendered again before it is next read or reloaded.
    pub text_stale: bool,
    /// The members (as the API lists them) changed: views that show them are told.
    pub members_changed: bool,
}

impl BookChange {
    /// Members changed: a new text, and views told.
    pub fn members() -> BookChange {
        BookChange {
            text_stale: true,
            members_changed: true,
        }
    }

    /// Only what a render shows changed (ids, phases, leavers in service), if `changed`.
    pub fn rendering(changed: bool) -> BookChange {
        BookChange {
            text_stale: changed,
            members_changed: false,
        }
    }
}
