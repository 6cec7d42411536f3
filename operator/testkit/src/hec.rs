//! Not yet written: being filled in right after the Okta server.
