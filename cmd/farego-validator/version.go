package main

import "github.com/farego/farego/agent"

func version() string { return agent.Version }
