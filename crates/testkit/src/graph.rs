//! The Graph client pointed at a Graph emulator. The emulator does not know the client's
//! types (it speaks only Graph's wire format), so the bridge between the two lives here.

use graph_emulator::RunningGraphEmulator;
use pimbridge::graph::GraphClientSettings;

/// Client settings for a running Graph emulator.
pub trait GraphEmulatorClient {
    /// Settings that reach this emulator with its tenant and app credentials.
    fn client_settings(&self) -> GraphClientSettings;
}

impl GraphEmulatorClient for RunningGraphEmulator {
    fn client_settings(&self) -> GraphClientSettings {
        let settings = self.settings();
        let mut client = GraphClientSettings::new(
            settings.tenant_id,
            settings.client_id,
            pimbridge::secret::SecretString::new(settings.client_secret.expose()),
        );
        client.authority_url = self.base_url();
        client.graph_url = self.graph_url();
        client
    }
}

/// The clientState test apps and Graph emulators agree on.
pub const GRAPH_CLIENT_STATE: &str = "graph-client-state-0123456789";

/// A `[graph]` section that reaches `emulator` with its tenant and app credentials and
/// [`GRAPH_CLIENT_STATE`]; tests set further fields on it.
pub fn graph_section(emulator: &RunningGraphEmulator) -> pimbridge::config::GraphSettings {
    graph_section_at(&emulator.client_settings())
}

/// Like [`graph_section`], for any client settings (a Graph that is not there, say).
pub fn graph_section_at(client: &GraphClientSettings) -> pimbridge::config::GraphSettings {
    crate::helpers::section(&format!(
        "tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nclient_state = \"{GRAPH_CLIENT_STATE}\"\nauthority_url = \"{}\"\ngraph_url = \"{}\"\n",
        client.tenant_id,
        client.client_id,
        client.client_secret.expose(),
        client.authority_url,
        client.graph_url,
    ))
}
