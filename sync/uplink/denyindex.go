package uplink

import (
	"fmt"
	"slices"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// Fetching deny-list shards through the index (Config.DenyIndexWait > 0).
// It all runs on the downlink goroutine.
const (
	// denyGroupSize is how many shard topics the uplink holds subscribed
	// at once: with its own 6 subscriptions (7 with releases) it stays
	// within the embedded broker's 32 per device. A broker that refuses
	// some gets groups of the size it granted.
	denyGroupSize = 16
	// denyGroupWait is how long a group of shard subscriptions waits
	// without any of its shards arriving before it is given up (the
	// shards left are tried again on the next index).
	denyGroupWait = time.Minute
)

// denySync is the state of fetching shards through the index on one
// connection (client), and the newest index accepted in this process.
type denySync struct {
	client   mqtt.Client // the connection the state belongs to
	gotIndex bool        // an index was handled on this connection
	fallback bool        // subscribed to every shard on this connection
	since    time.Time   // when the connection was first seen

	seen  uint64    // the newest index version accepted (no older one is)
	todo  []int     // shards the last index has newer than the device, not yet subscribed
	group []int     // shard topics subscribed now
	got   []bool    // by shard: a message came on its topic since it was subscribed
	moved time.Time // when the group was subscribed, or the last of its shards came
	size  int       // shard topics subscribed at most at once (denyGroupSize, or what the broker granted)
	unsub []string  // the shard topics last unsubscribed (again if a SUBSCRIBE is refused)
}

// onSession tells the downlink goroutine about a new connection, so that
// it can fall back to every shard if no index comes. It never blocks.
func (u *Uplink) onSession(c mqtt.Client) {
	for {
		select {
		case u.sessions <- c:
			return
		default:
		}
		select {
		case <-u.sessions:
		default:
		}
	}
}

// denyConnection makes d the state of connection c (a new connection
// starts with no shard subscriptions: its session is clean). It reports
// false for a message of a connection that is closed.
func (u *Uplink) denyConnection(d *denySync, c mqtt.Client) bool {
	if c == nil {
		return false
	}
	if d.client == c {
		return true
	}
	if !c.IsConnectionOpen() {
		return false
	}
	d.client, d.gotIndex, d.fallback, d.since = c, false, false, time.Now()
	d.todo, d.group, d.unsub = nil, nil, nil
	d.got = make([]bool, record.DenyShardCount)
	d.size = denyGroupSize
	return true
}

// denyDeadline returns when the downlink goroutine must act next (the
// fallback, a group given up) and false when nothing is due.
func (u *Uplink) denyDeadline(d *denySync) (time.Time, bool) {
	switch {
	case d.client == nil || d.fallback:
		return time.Time{}, false
	case !d.gotIndex:
		return d.since.Add(u.cfg.DenyIndexWait), true
	case len(d.group) > 0:
		return d.moved.Add(denyGroupWait), true
	}
	return time.Time{}, false
}

// denyTimer acts on what is due: with no index on this connection within
// DenyIndexWait, every shard is subscribed (a server that publishes no
// index); a group whose shards stopped coming is given up.
func (u *Uplink) denyTimer(d *denySync) {
	at, ok := u.denyDeadline(d)
	if !ok || time.Now().Before(at) {
		return
	}
	if !d.gotIndex {
		u.log.Info("uplink: no deny-list index from the server; taking every shard", "waited", u.cfg.DenyIndexWait.String())
		u.denyFallback(d)
		return
	}
	missing := 0
	for _, n := range d.group {
		if !d.got[n] {
			missing++
		}
	}
	u.log.Warn("uplink: deny-list shards did not come; trying again on the next index", "missing", missing, "of", len(d.group))
	u.nextDenyGroup(d)
}

// denyFallback subscribes to every shard (PREFIX/fleet/denylist/+) and to
// the whole list (PREFIX/fleet/denylist) for the rest of the connection,
// as a device without the index does.
func (u *Uplink) denyFallback(d *denySync) {
	d.fallback, d.todo, d.group = true, nil, nil // not again on this connection
	refused, err := u.subscribe(d.client, d.unsub, u.topics.DenyShards(), u.topics.Fleet(record.DocDenyList))
	if err == nil && len(refused) > 0 {
		err = fmt.Errorf("the broker refused %s (check its ACL)", refused[0])
	}
	if err != nil {
		u.log.Warn("uplink: the deny-list shards cannot be subscribed; trying again on the next connection", "err", err)
		return
	}
	u.count(func(s *Stats) { s.DenyIndexFallbacks++ })
}

// handleDenyIndex takes a deny-list shard index: if it is fleet-signed,
// well formed and not older than the newest index accepted, the shards it
// has newer than the device are fetched (subscribed in groups, each topic
// given up once its retained shard came). The index itself changes
// nothing on the device: each shard is checked as it arrives.
func (u *Uplink) handleDenyIndex(d *denySync, m inbound) {
	if len(m.payload) == 0 {
		u.log.Debug("uplink: retained downlink cleared on the broker", "topic", m.topic)
		return
	}
	body, err := wire.Open(m.payload, wire.TypeDownlink, u.cfg.FleetPublicKey)
	if err != nil {
		u.refuseDownlink(m.topic, m.payload, err)
		return
	}
	dl, err := wire.ParseDownlink(body)
	if err != nil {
		u.refuseDownlink(m.topic, m.payload, err)
		return
	}
	if dl.Kind != record.DocDenyIndex {
		u.refuseDownlink(m.topic, m.payload, fmt.Errorf("a %s downlink on the %s topic", dl.Kind, record.DocDenyIndex))
		return
	}
	x, err := record.ParseDenyIndex(dl.Body)
	if err != nil {
		u.refuseDownlink(m.topic, m.payload, err)
		return
	}
	if dl.Version < d.seen {
		u.refuseDownlink(m.topic, m.payload, fmt.Errorf("deny-list index version %d is older than the accepted %d", dl.Version, d.seen))
		return
	}
	d.seen = dl.Version
	if !u.denyConnection(d, m.client) {
		return // from a connection already closed: the next one brings it again
	}
	d.gotIndex = true
	defer u.count(func(s *Stats) { s.DenyIndexes++ }) // once its shards are subscribed
	if d.fallback {
		return // every shard comes anyway on this connection
	}
	have := u.state.Versions()
	d.todo = d.todo[:0]
	for n, v := range x.Versions {
		if v > have[record.DenyShardKey(n)] && !slices.Contains(d.group, n) {
			d.todo = append(d.todo, n)
		}
	}
	u.log.Debug("uplink: deny-list index", "version", dl.Version, "behind", len(d.todo)+len(d.group))
	if len(d.group) == 0 {
		u.nextDenyGroup(d)
	}
}

// denyShardCame notes a message on a shard topic of a group (handled
// already); once every shard of the group came, the group is unsubscribed
// and the next one subscribed.
func (u *Uplink) denyShardCame(d *denySync, m inbound, shard int) {
	if m.client != d.client || !slices.Contains(d.group, shard) || d.got[shard] {
		return
	}
	d.got[shard] = true
	d.moved = time.Now()
	for _, n := range d.group {
		if !d.got[n] {
			return
		}
	}
	u.nextDenyGroup(d)
}

// nextDenyGroup unsubscribes the group's shard topics and subscribes the
// next denyGroupSize shards still to fetch.
func (u *Uplink) nextDenyGroup(d *denySync) {
	if len(d.group) > 0 {
		topics := make([]string, len(d.group))
		for i, n := range d.group {
			topics[i] = u.topics.DenyShard(n)
		}
		u.unsubscribe(d.client, topics...)
		d.unsub = topics
		d.group = d.group[:0]
	}
	if len(d.todo) == 0 {
		return
	}
	n := min(len(d.todo), d.size)
	group := slices.Clone(d.todo[:n])
	d.todo = d.todo[n:]
	filters := make([]string, len(group))
	for i, s := range group {
		filters[i] = u.topics.DenyShard(s)
		d.got[s] = false
	}
	d.group, d.moved = group, time.Now()
	refused, err := u.subscribe(d.client, d.unsub, filters...)
	if err != nil {
		u.log.Warn("uplink: deny-list shards not subscribed; trying again on the next index", "err", err)
		d.group, d.todo = d.group[:0], nil
		return
	}
	if len(refused) > 0 {
		// A broker with a tighter bound on subscriptions: the refused
		// shards wait for the next group, and groups are as large as what
		// it granted.
		var granted, again []int
		for i, f := range filters {
			if slices.Contains(refused, f) {
				again = append(again, group[i])
			} else {
				granted = append(granted, group[i])
			}
		}
		u.log.Warn("uplink: the broker refused some deny-list shard subscriptions; taking fewer at a time",
			"refused", len(refused), "granted", len(granted))
		u.count(func(s *Stats) { s.DenyShardRefused += uint64(len(refused)) })
		d.group, d.todo, d.size = granted, append(again, d.todo...), len(granted)
		if len(granted) == 0 {
			d.todo = nil // nothing granted: try again on the next index
			return
		}
	}
	u.count(func(s *Stats) { s.DenyShardSubscriptions += uint64(len(d.group)) })
}

// subscribe subscribes c to filters at QoS 1 and waits (ConnectTimeout) for
// the SUBACK, trying the refused filters again (up to subscribeTries in
// all, a little later each time, after unsubscribing from unsub again). It
// returns the filters the broker still refused, and an error if no SUBACK
// came.
//
// A refusal may be transient: mochi (the embedded broker) refuses a whole
// SUBSCRIBE, or UNSUBSCRIBE, whose packet id is that of one of its own
// deliveries to the client not yet acknowledged (a retained shard just
// delivered), and MQTT 3.1.1's UNSUBACK cannot say so: the filters of an
// unsubscription refused that way still count against the broker's bound.
func (u *Uplink) subscribe(c mqtt.Client, unsub []string, filters ...string) (refused []string, err error) {
	all := filters
	unsub = slices.DeleteFunc(slices.Clone(unsub), func(t string) bool { return slices.Contains(all, t) })
	for try := range subscribeTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * subscribeRetryWait)
			if len(unsub) > 0 {
				u.unsubscribe(c, unsub...)
			}
		}
		if refused, err = u.subscribeOnce(c, filters...); err != nil || len(refused) == 0 {
			return refused, err
		}
		filters = refused
	}
	return refused, nil
}

// subscribeTries and subscribeRetryWait bound subscribe's retries.
const (
	subscribeTries     = 4
	subscribeRetryWait = 100 * time.Millisecond
)

// subscribeOnce sends one SUBSCRIBE and waits for its SUBACK.
func (u *Uplink) subscribeOnce(c mqtt.Client, filters ...string) (refused []string, err error) {
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = 1
	}
	tok := c.SubscribeMultiple(m, u.onMessage)
	if !tok.WaitTimeout(u.cfg.ConnectTimeout) {
		return nil, fmt.Errorf("no SUBACK within %v", u.cfg.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, qos := range st.Result() {
			if qos == 0x80 {
				refused = append(refused, f)
			}
		}
	}
	return refused, nil
}

// unsubscribe unsubscribes c from topics, waiting (ConnectTimeout) for the
// UNSUBACK.
func (u *Uplink) unsubscribe(c mqtt.Client, topics ...string) {
	tok := c.Unsubscribe(topics...)
	if !tok.WaitTimeout(u.cfg.ConnectTimeout) || tok.Error() != nil {
		u.log.Debug("uplink: deny-list shards not unsubscribed", "err", tok.Error())
	}
}
