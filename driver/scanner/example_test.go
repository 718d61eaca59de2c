package scanner_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/farego/farego/driver/scanner"
)

// A bench setup: codes typed or piped in, one per line.
func ExampleLineSource() {
	input := strings.NewReader("FG1:ABC DEF\r\nnot \x07 printable\n\nFG1:XYZ")
	src := scanner.NewLineSource("bench", input, nil)
	frames := make(chan scanner.Frame)
	go scanner.RunAll(context.Background(), []scanner.Source{src}, frames)
	for f := range frames {
		fmt.Printf("%s: %q\n", f.Scanner, f.Text)
	}
	fmt.Printf("%+v\n", src.Stats())
	// Output:
	// bench: "FG1:ABC DEF"
	// bench: "FG1:XYZ"
	// {Frames:2 Overlong:0 NonPrintable:1 Unframed:0 Incomplete:0 Reconnects:0}
}

// A scanner set to wrap each scan in STX/ETX and send no terminator.
func ExampleFramer() {
	f, err := scanner.NewFramer("front", scanner.Framing{Prefix: "\x02", Suffix: "\x03"}, nil)
	if err != nil {
		panic(err)
	}
	now := time.Now()
	for _, chunk := range []string{"\x02FG1:AB", "C\x03\x02FG1:D", "EF\x03"} {
		for _, fr := range f.Feed([]byte(chunk), now) {
			fmt.Printf("%q\n", fr.Text)
		}
	}
	// Output:
	// "FG1:ABC"
	// "FG1:DEF"
}
