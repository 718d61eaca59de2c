package agent

// Version is the software version, set at build time with
// -ldflags "-X github.com/farego/farego/agent.Version=…". It is recorded in
// every tap record.
var Version = "dev"
