// Package agent is the validator's decision logic: verify → deny list →
// duplicate/passback → fare → durable record → feedback.
package agent
