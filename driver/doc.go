// Package driver groups the validator's hardware edges: the parts that talk
// to devices and know nothing about fares, payment codes or riders.
//
// It holds no code itself; the work is done by its sub-packages:
//
//   - [github.com/farego/farego/driver/scanner] reads QR scanners (Honeywell,
//     Newland, Zebra-class 2D imagers in serial or USB-CDC mode) through
//     github.com/tarm/serial and turns their byte stream into complete,
//     printable text frames, one stream for several scanners, each frame
//     tagged with the scanner it came from. It survives a scanner being
//     unplugged and plugged back in. A line source reading standard input or a
//     file stands in for a scanner on the bench.
//   - [github.com/farego/farego/driver/feedback] tells the rider yes or no:
//     a small Feedback interface (accepted, rejected, out of service) with a
//     terminal implementation, a Linux sysfs GPIO/LED one that plays timed
//     light and buzzer patterns without blocking the caller, a recorder for
//     tests and a fan-out to several outputs.
//   - [github.com/farego/farego/driver/backoff] is the jittered, capped
//     retry wait of every edge that reconnects: a scanner unplugged and
//     plugged back in here, and the MQTT link above (sync), which may
//     import it because it sits at the bottom of the graph.
//
// The agent joins the two: frames from the scanner go to the verifier, and its
// decision comes back out through the feedback. Neither sub-package imports
// anything else from farego, and a test keeps it that way.
package driver
