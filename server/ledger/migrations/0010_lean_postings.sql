-- postings_tap served only verify (which reads every posting anyway, and
-- now sums them by tap); settling a batch paid an insert into it for every
-- posting: about one page in seven of what a SQLite batch writes.
DROP INDEX postings_tap;
