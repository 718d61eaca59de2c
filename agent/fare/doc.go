// Package fare holds the fare table and the rating rules shared by the
// validator and the settlement server.
//
// The validator needs one thing from the table: the base fare of a ride, by
// route and rider profile ([Table.Fare]). The settlement server rates a whole
// service day of one account in event-time order ([RateDay]): a ride within
// the transfer window of the last full-fare ride costs the transfer fare, and
// the day's total never exceeds the profile's daily cap. Because RateDay is a
// pure function of the day's rides, a late offline tap gives the same final
// charges as one that arrived on time.
//
// Amounts are integers in the currency's minor units (cents); there is no
// floating point anywhere on the money path.
//
// # Caveats
//
// The service day runs from ServiceDayStart in the table's time zone, not
// from midnight UTC: a ride at 02:00 local time belongs to the previous day
// when the day starts at 04:00. Time zones are loaded from the system's zoneinfo
// (or Go's embedded copy; binaries import time/tzdata).
package fare
