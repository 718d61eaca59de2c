// Package feedback tells the rider the outcome of a tap: accepted (with the
// fare), rejected (with the reason), or out of service.
//
// [Feedback] is the one small interface the agent calls. The implementations:
//
//   - [Console] writes one clear line per event, with a coloured badge on a
//     terminal and plain text otherwise: the bench, demos, a serial console.
//   - [GPIO] drives a green light, a red light and a buzzer, playing a timed
//     [Pattern] per event: by default green for 800 ms with one beep, red
//     for a second with two beeps, steady red when out of service. Each
//     output is a line on the GPIO character device (/dev/gpiochipN,
//     through github.com/warthog618/go-gpiocdev; see [LineConfig]) or, as a
//     fallback, a sysfs value file (/sys/class/gpio/gpioN/value,
//     /sys/class/leds/NAME/brightness).
//   - [Recorder] records events for tests and can wait for the n-th one.
//   - [Multi] sends each event to several of the above.
//
// This package knows nothing about fares or payment codes: the agent decides
// and words the messages; [FormatAmount] only prints an amount.
//
// # Caveats
//
// Feedback methods are on the tap path and must not hold it up. A GPIO
// writes the first step of a pattern before returning (a few small file
// writes) and plays the rest in the background; a new event cuts the old
// pattern short. None of the implementations here block on the ctx they are
// given, and they do not stop a pattern when it is done: a tap handler's
// context usually ends as soon as the handler returns.
//
// Out of service lasts until the next Accepted or Rejected; there is no
// separate "back in service" call.
//
// Character-device lines are requested as outputs for as long as the GPIO
// is open (LineConfig.ActiveLow inverts them); nobody else can drive them
// meanwhile, and a line a kernel driver holds (gpio-leds) cannot be
// requested: give that output's LED class brightness file instead. When a
// line cannot be requested and the output also has a file, the file is used
// and the fallback logged; without a file NewGPIO fails.
//
// For sysfs files, GPIO expects the pins to be exported and set to outputs
// already (by the device image or a udev rule), with active_low set there if
// the wiring needs it. It writes "1"/"0", or max_brightness/"0" for a LED class brightness
// file, with open-write-close each time, so another process or a re-created
// file does not leave it writing into the void.
package feedback
