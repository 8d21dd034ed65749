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
