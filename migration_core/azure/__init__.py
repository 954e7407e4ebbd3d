"""Azure: provisioning flexible servers and the managed migration backends (flexible-server migration
service, Azure DMS classic), through the official async SDKs. Nothing here runs unless an
`[azure]` section or AZURE_SUBSCRIPTION_ID says which subscription to use."""
