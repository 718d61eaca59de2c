// The wallet's one message catalog. Every sentence a rider sees is here, in
// English and Simplified Chinese, with the same keys in both (a test checks
// that). The language comes from the browser's preferences.

export const catalog = {
  en: {
    app_title: "farego wallet",
    net_online: "Online",
    update_ready: "New version ready",
    update_button: "Update",
    net_offline: "Offline: codes still work",
    net_unreachable: "Server unreachable: codes still work",
    net_offline_nopass: "Offline",
    net_unreachable_nopass: "Server unreachable",
    welcome_intro: "Pay your bus fare with a code that works without a network.",
    register_heading: "New account",
    profile_label: "Fare type",
    profile_adult: "Adult",
    profile_child: "Child",
    profile_senior: "Senior",
    profile_student: "Student",
    profile_note: "Child, senior and student fares are confirmed by the operator; until then you pay the adult fare.",
    fare_type: "Fare type: {profile}.",
    limit_label: "Most a shop may take for one code (empty: no limit)",
    limit_save: "Save the limit",
    limit_none: "Shops may take any amount for one code.",
    limit_set: "A shop may take at most {amount} for one code.",
    limit_bad: "Enter an amount above 0 such as {example}, or leave it empty for no limit.",
    limit_too_large: "The limit can be at most {amount}.",
    limit_decimals: "Use at most {digits} decimals, such as {example}.",
    limit_whole: "Use a whole amount, such as {example}.",
    fare_type_pending: "Fare type: {profile}, waiting for the operator to confirm it. Until then your passes carry the adult fare.",
    name_label: "Name (optional)",
    register_button: "Create account",
    signin_heading: "I have an account",
    account_label: "Account number",
    secret_label: "Account secret",
    signin_button: "Sign in",
    secret_heading: "Keep your account secret",
    secret_intro:
      "This is the only time the secret is shown. Write it down or keep it in a password manager: you need it to sign in on another phone.",
    copy_button: "Copy secret",
    copied: "Copied.",
    copy_failed: "Could not copy; please write it down.",
    secret_done: "I have kept it",
    code_heading: "Your payment code",
    code_hint: "Hold the code under the reader.",
    countdown: "New code in {s} s",
    countdown_pass_ends: "This pass ends in {s} s",
    new_code: "New code",
    code_ready: "New code ready, made at {time}.",
    code_paid_shop: "{shop} took {amount} with your last code: this is a new one.",
    code_refused_shop: "A shop's payments with this code were refused (more than your balance, or over your limit for shops): it pays no more at shops. Tap New code for another; it still pays on a bus.",
    qr_label: "Payment code for account {account}, made at {time}",
    no_pass: "No pass on this phone yet. Connect to the internet to get one.",
    no_pass_online: "No pass on this phone yet.",
    get_pass: "Get a pass",
    pass_fetching: "Getting your pass…",
    pass_valid: "Pass {serial} is valid until {until}.",
    pass_expiring: "Your pass expires at {until}. Connect to the internet to renew it.",
    pass_expired: "Your pass expired at {until}: no code until you have a new one. Connect to the internet to get it.",
    pass_expired_unreachable: "Your pass expired at {until}: no code until you have a new one. The server cannot be reached: the wallet gets it when the server answers.",
    pass_blocked: "Pass {serial} is blocked by the operator: buses and shops refuse its codes. Getting a new pass…",
    pass_blocked_stays: "Pass {serial} is blocked by the operator: buses and shops refuse its codes.",
    pass_account_blocked: "Your account is blocked: buses and shops refuse its codes. See Balance below.",
    pass_account_blocked_stale: "At {time} your account was below zero and blocked. If you have topped up since, this code works; if not, buses refuse it.",
    pass_not_yet: "Your pass is not valid yet. Check the phone's clock.",
    clock_ahead:
      "This phone's clock is {amount} ahead of the server's: validators refuse codes from the future. Set the date and time automatically.",
    clock_behind:
      "This phone's clock is {amount} behind the server's: validators refuse its codes as expired. Set the date and time automatically.",
    clock_was_ahead:
      "At {time} this phone's clock was {amount} ahead of the server's: validators refuse codes from the future. If it still is, set the date and time automatically.",
    clock_was_behind:
      "At {time} this phone's clock was {amount} behind the server's: validators refuse its codes as expired. If it still is, set the date and time automatically.",
    span_minutes: "{n} min",
    span_hours: "{n} h",
    span_days: "{n} days",
    pass_exhausted: "This pass has made all the codes it can. Connect to the internet to renew it.",
    pass_damaged: "The pass stored on this phone is damaged. Connect to the internet to get a new one.",
    crypto_missing:
      "This browser cannot make payment codes (it lacks Ed25519 in WebCrypto). Use a current Chrome, Firefox or Safari.",
    insecure_page:
      "Payment codes can only be made on a secure page: open the wallet at its https:// address.",
    balance_heading: "Balance",
    balance_as_of: "as of {time}",
    standing_ok: "Your account is in good standing.",
    standing_low: "Top up soon: your balance is below {amount}, the least a new pass needs. A ride your balance cannot pay blocks your account until you top up.",
    deny_negative_balance: "Your account is blocked because its balance is below zero. Top it up to ride again.",
    deny_duplicate_code: "Your account is blocked because one of its codes was used twice. Contact the operator.",
    deny_other: "Your account is blocked by the operator (reason: {reason}). Contact the operator.",
    refresh: "Refresh",
    refresh_offline: "Offline: nothing could be updated. The balance and activity shown are as of {time}.",
    refresh_unreachable: "The server cannot be reached: nothing could be updated. The balance and activity shown are as of {time}.",
    refresh_offline_never: "Offline: nothing could be updated, and this phone has not fetched the account yet.",
    refresh_unreachable_never: "The server cannot be reached: nothing could be updated, and this phone has not fetched the account yet.",
    rides_heading: "Recent rides",
    rides_none: "No rides yet.",
    col_time: "When",
    col_route: "Route",
    col_charge: "Charge",
    col_note: "Note",
    ride_transfer: "Transfer",
    ride_capped: "Daily cap reached",
    ride_of_fare: "(fare {fare})",
    ride_flag_duplicate_code: "Code used twice: not charged",
    ride_flag_invalid_code: "Code refused by the server: not charged",
    ride_flag_other: "Flagged ({flag}): not charged",
    activity_heading: "Account activity",
    activity_none: "Nothing yet.",
    activity_more: "Earlier activity",
    col_what: "What",
    col_amount: "Amount",
    col_balance: "Balance",
    act_topup: "Top-up",
    act_fare: "Bus fare",
    act_fare_correction: "Fare adjusted",
    act_payment: "Paid at {merchant}",
    act_refund: "Refund from {merchant}",
    act_refund_reason: "Refund from {merchant}: {reason}",
    signed_in_as: "Account {account}",
    signed_in_as_named: "Account {account} · {name}",
    sign_out: "Sign out",
    sign_out_text: "Signing out removes your pass from this phone. You need your account secret to sign in again.",
    sign_out_confirm: "Sign out now",
    signed_out: "Signed out: the pass and its keys are no longer on this phone.",
    change_secret: "Change account secret",
    change_secret_text:
      "If someone else may know your secret, or a phone with this wallet was lost: the old secret stops working at once, and you get a new one to write down. Passes on any other phone are blocked too: shops refuse them at once, buses as soon as they are next online.",
    change_secret_confirm: "Change it now",
    cancel: "Cancel",
    err_network: "The server cannot be reached. Check your connection and try again.",
    err_rate_limited: "Too many new accounts were made from this network just now. Try again in {seconds} seconds.",
    err_rate_limited_later: "Too many new accounts were made from this network just now. Try again in a minute.",
    err_rate_limited_changes: "Too many changes to accounts were made from this network just now. Try again in {seconds} seconds.",
    err_rate_limited_changes_later: "Too many changes to accounts were made from this network just now. Try again in a minute.",
    err_too_many_credentials:
      "This account has too many passes in use. If you did not get them all yourself, change your account secret: that blocks them. Otherwise wait until an older one expires (within a day).",
    err_secret_too_many_credentials:
      "Your secret was not changed: this account has had too many passes in the last day. If someone else may know your secret, ask the operator to change it for you now.",
    err_insufficient_funds: "Top up your account first: its balance is too low to get a pass.",
    err_insufficient_funds_minimum: "Top up your account first: a pass needs a balance of at least {amount}.",
    err_not_in_good_standing: "Your account is not in good standing, so no pass can be issued. Top it up or contact the operator.",
    err_forbidden: "Wrong account number or secret.",
    err_secret_changed:
      "This account's secret was changed (on another phone, or by the operator), and the passes on this phone were stopped with it. Sign in with the new secret.",
    err_unauthorized: "Sign in again with your account number and secret.",
    err_not_found: "That account does not exist.",
    err_bad_account: "The account number must be a whole number.",
    err_invalid: "The server found the request invalid.",
    err_invalid_name:
      "That name cannot be used: keep it under 128 bytes (about 40 Chinese characters) without invisible or control characters, or leave it empty.",
    err_bad_request: "The server could not read the wallet's request. Reload the page and try again.",
    err_internal: "The server had a problem. Try again later.",
    err_unknown: "Something went wrong (error {code}). Try again later.",
    err_storage: "This browser cannot keep the wallet's data (is it in private mode?).",
    err_storage_damaged: "The account stored on this phone was damaged. Sign in again with your account number and secret.",
    err_account_repaired:
      "The account number stored on this phone had been changed to {was}. The wallet went back to account {account}, the one its pass and secret are for.",
    err_secret_format: "Enter the account secret you kept when you registered.",
    err_account_format: "The account number must be a whole number above zero.",
    err_account_too_long: "No account has so long a number: check it.",
  },
  "zh-Hans": {
    app_title: "farego 钱包",
    net_online: "在线",
    update_ready: "新版本已就绪",
    update_button: "更新",
    net_offline: "离线：乘车码仍可使用",
    net_unreachable: "无法连接服务器：乘车码仍可使用",
    net_offline_nopass: "离线",
    net_unreachable_nopass: "无法连接服务器",
    welcome_intro: "用无需网络的乘车码支付公交车费。",
    register_heading: "创建新账户",
    profile_label: "票种",
    profile_adult: "成人",
    profile_child: "儿童",
    profile_senior: "老年人",
    profile_student: "学生",
    profile_note: "儿童、老年人和学生票种需经运营方确认；确认前按成人票价收费。",
    name_label: "姓名（可选）",
    register_button: "创建账户",
    signin_heading: "已有账户",
    account_label: "账户号码",
    secret_label: "账户密钥",
    signin_button: "登录",
    secret_heading: "请保存您的账户密钥",
    secret_intro: "密钥仅显示这一次。请抄下来或存入密码管理器：在另一部手机上登录时需要它。",
    copy_button: "复制密钥",
    copied: "已复制。",
    copy_failed: "无法复制，请手动抄写。",
    secret_done: "我已保存",
    code_heading: "您的乘车码",
    code_hint: "请将乘车码对准读码器。",
    countdown: "{s} 秒后更换新码",
    countdown_pass_ends: "{s} 秒后乘车凭证到期",
    new_code: "换一个码",
    code_ready: "新的乘车码已生成（{time}）。",
    code_paid_shop: "{shop} 已用您上一个码收款 {amount}，这是新的码。",
    code_refused_shop: "商户使用此码的付款被拒（超出余额，或超出您设定的商户上限）：该码不能再用于商户付款。请点“换一个码”；此码仍可乘车。",
    qr_label: "账户 {account} 的乘车码，生成于 {time}",
    no_pass: "此手机上还没有乘车凭证。请联网获取。",
    no_pass_online: "此手机上还没有乘车凭证。",
    get_pass: "获取乘车凭证",
    pass_fetching: "正在获取乘车凭证…",
    pass_valid: "乘车凭证 {serial} 有效期至 {until}。",
    pass_expiring: "乘车凭证将于 {until} 过期。请联网续期。",
    pass_expired: "乘车凭证已于 {until} 过期：获取新凭证前无法出示乘车码。请联网获取。",
    pass_expired_unreachable: "乘车凭证已于 {until} 过期：获取新凭证前无法出示乘车码。暂时无法连接服务器；服务器恢复后钱包会自动获取。",
    pass_blocked: "乘车凭证 {serial} 已被运营方停用：公交和商户将拒绝其乘车码。正在获取新凭证…",
    pass_blocked_stays: "乘车凭证 {serial} 已被运营方停用：公交和商户将拒绝其乘车码。",
    pass_account_blocked: "您的账户已被停用：公交和商户将拒绝其乘车码。详见下方余额。",
    pass_account_blocked_stale: "{time} 时您的账户余额低于零，已被停用。如果此后已充值，此乘车码可以使用；否则公交将拒绝。",
    pass_not_yet: "乘车凭证尚未生效。请检查手机时间。",
    clock_ahead: "此手机时间比服务器快 {amount}，验票机会拒收来自未来的乘车码。请设置为自动获取日期和时间。",
    clock_behind: "此手机时间比服务器慢 {amount}，验票机会将其乘车码视为过期而拒收。请设置为自动获取日期和时间。",
    clock_was_ahead: "{time} 时此手机时间比服务器快 {amount}，验票机会拒收来自未来的乘车码。如果仍是如此，请设置为自动获取日期和时间。",
    clock_was_behind: "{time} 时此手机时间比服务器慢 {amount}，验票机会将其乘车码视为过期而拒收。如果仍是如此，请设置为自动获取日期和时间。",
    span_minutes: "{n} 分钟",
    span_hours: "{n} 小时",
    span_days: "{n} 天",
    pass_exhausted: "此乘车凭证能生成的乘车码已用完。请联网续期。",
    pass_damaged: "此手机上保存的乘车凭证已损坏。请联网获取新凭证。",
    crypto_missing: "此浏览器无法生成乘车码（不支持 WebCrypto 的 Ed25519）。请使用最新版 Chrome、Firefox 或 Safari。",
    insecure_page: "乘车码只能在安全页面上生成：请通过 https:// 地址打开钱包。",
    balance_heading: "余额",
    balance_as_of: "更新于 {time}",
    fare_type: "票种：{profile}。",
    limit_label: "商家单次扫码最多可收取（留空：不限）",
    limit_save: "保存上限",
    limit_none: "商家单次扫码可收取任意金额。",
    limit_set: "商家单次扫码最多可收取 {amount}。",
    limit_bad: "请输入大于 0 的金额，如 {example}；留空表示不限。",
    limit_too_large: "上限最多为 {amount}。",
    limit_decimals: "最多使用 {digits} 位小数，如 {example}。",
    limit_whole: "请输入整数金额，如 {example}。",
    fare_type_pending: "票种：{profile}，等待运营方确认。确认前，您的乘车码按成人票价收费。",
    standing_ok: "账户状态正常。",
    standing_low: "请尽快充值：余额低于 {amount}，即获取新乘车凭证所需的最低余额。余额不足以支付的乘车会使账户被停用，直至充值。",
    deny_negative_balance: "账户余额为负，已被停用。充值后即可继续乘车。",
    deny_duplicate_code: "账户的一个乘车码被重复使用，账户已被停用。请联系运营方。",
    deny_other: "账户已被运营方停用（原因：{reason}）。请联系运营方。",
    refresh: "刷新",
    refresh_offline: "离线：无法更新。显示的余额和明细更新于 {time}。",
    refresh_unreachable: "无法连接服务器：无法更新。显示的余额和明细更新于 {time}。",
    refresh_offline_never: "离线：无法更新，此手机尚未获取过账户数据。",
    refresh_unreachable_never: "无法连接服务器：无法更新，此手机尚未获取过账户数据。",
    rides_heading: "最近乘车记录",
    rides_none: "还没有乘车记录。",
    col_time: "时间",
    col_route: "线路",
    col_charge: "扣费",
    col_note: "备注",
    ride_transfer: "换乘优惠",
    ride_capped: "已达每日封顶",
    ride_of_fare: "（票价 {fare}）",
    ride_flag_duplicate_code: "乘车码被重复使用：未扣费",
    ride_flag_invalid_code: "服务器拒绝了此乘车码：未扣费",
    ride_flag_other: "已标记（{flag}）：未扣费",
    activity_heading: "账户明细",
    activity_none: "暂无记录。",
    activity_more: "更早的记录",
    col_what: "项目",
    col_amount: "金额",
    col_balance: "余额",
    act_topup: "充值",
    act_fare: "乘车费",
    act_fare_correction: "车费调整",
    act_payment: "向{merchant}付款",
    act_refund: "{merchant}退款",
    act_refund_reason: "{merchant}退款：{reason}",
    signed_in_as: "账户 {account}",
    signed_in_as_named: "账户 {account} · {name}",
    sign_out: "退出登录",
    sign_out_text: "退出登录会从此手机删除乘车凭证。再次登录需要账户密钥。",
    sign_out_confirm: "确认退出",
    signed_out: "已退出登录：此手机上已不再保存乘车凭证及其密钥。",
    change_secret: "更换账户密钥",
    change_secret_text: "如果他人可能知道您的密钥，或装有此钱包的手机丢失：旧密钥立即失效，您将获得新密钥，请记下。其他手机上的乘车凭证也将被停用：商户立即拒绝，公交车在下次联网后拒绝。",
    change_secret_confirm: "立即更换",
    cancel: "取消",
    err_network: "无法连接服务器。请检查网络后重试。",
    err_rate_limited: "此网络刚刚创建了太多账户。请在 {seconds} 秒后重试。",
    err_rate_limited_later: "此网络刚刚创建了太多账户。请一分钟后重试。",
    err_rate_limited_changes: "此网络刚刚对账户做了太多更改。请在 {seconds} 秒后重试。",
    err_rate_limited_changes_later: "此网络刚刚对账户做了太多更改。请一分钟后重试。",
    err_too_many_credentials: "此账户使用中的乘车凭证过多。如果并非都是您本人领取的，请更改账户密钥：这会停用它们。否则请等待较早的凭证过期（一天内）。",
    err_secret_too_many_credentials: "您的密钥未被更改：此账户在过去一天内领取的乘车凭证过多。如果其他人可能知道您的密钥，请立即联系运营方为您更改。",
    err_insufficient_funds: "请先充值：账户余额不足，无法获取乘车凭证。",
    err_insufficient_funds_minimum: "请先充值：获取乘车凭证需要至少 {amount} 的余额。",
    err_not_in_good_standing: "账户状态异常，无法获取乘车凭证。请充值或联系运营方。",
    err_forbidden: "账户号码或密钥错误。",
    err_secret_changed: "此账户的密钥已被更改（在另一部手机上，或由运营方重置），本机上的乘车凭证已随之停用。请用新密钥登录。",
    err_unauthorized: "请用账户号码和密钥重新登录。",
    err_not_found: "该账户不存在。",
    err_bad_account: "账户号码必须是整数。",
    err_invalid: "服务器认为请求无效。",
    err_invalid_name: "无法使用该姓名：请控制在 128 字节以内（约 40 个汉字），不含不可见字符或控制字符，或留空。",
    err_bad_request: "服务器无法读取钱包的请求。请刷新页面后重试。",
    err_internal: "服务器出现问题。请稍后重试。",
    err_unknown: "出现错误（错误代码 {code}）。请稍后重试。",
    err_storage: "此浏览器无法保存钱包数据（是否处于无痕模式？）。",
    err_storage_damaged: "此手机上保存的账户数据已损坏。请用账户号码和密钥重新登录。",
    err_account_repaired: "此手机上保存的账户号码曾被改为 {was}。钱包已恢复为账户 {account}，即本机乘车凭证和密钥所属的账户。",
    err_secret_format: "请输入注册时保存的账户密钥。",
    err_account_format: "账户号码必须是大于零的整数。",
    err_account_too_long: "账户号码过长，请核对。",
  },
};

// The BCP 47 tags used for number and date formats.
const locales = { en: "en", "zh-Hans": "zh-Hans-CN" };

/** pickLanguage returns the catalog language for the browser's preferences. */
export function pickLanguage(prefs) {
  for (const p of prefs || []) {
    const tag = String(p).toLowerCase();
    if (tag.startsWith("zh")) return "zh-Hans";
    if (tag.startsWith("en")) return "en";
  }
  return "en";
}

const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
export const lang = pickLanguage(prefs);
const messages = catalog[lang];

/**
 * formatLocale is the locale dates and times are written in: the
 * browser's first language of the catalog's (en-GB writes "7 Dec 2026,
 * 14:05", zh-TW "2026年12月7日 下午2:05"), else the catalog's language in
 * the region of the browser's first one (a German phone with the wallet
 * in English: en-DE, day first and 24 hours), else the catalog's. Dates
 * were in US English (month first, AM/PM) whatever the phone's settings.
 */
export function formatLocale(prefs, lang) {
  const ok = (tag) => {
    try {
      return Intl.DateTimeFormat.supportedLocalesOf([tag]).length > 0;
    } catch {
      return false; // not a language tag
    }
  };
  const list = (prefs || []).map(String);
  const prefix = lang === "zh-Hans" ? "zh" : "en";
  const mine = list.find((p) => p.toLowerCase().startsWith(prefix + "-") && ok(p));
  if (mine) return mine;
  let region = "";
  try {
    region = list.length ? new Intl.Locale(list[0]).maximize().region || "" : "";
  } catch {
    region = ""; // not a language tag
  }
  const base = lang === "zh-Hans" ? "zh-Hans" : "en";
  if (region && ok(base + "-" + region)) return base + "-" + region;
  return locales[lang];
}

const dateLocale = formatLocale(prefs, lang);

/** t returns the sentence for key with {name} parameters filled in. */
export function t(key, params = {}) {
  const s = messages[key] ?? catalog.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** span says how long ms is, in minutes up to 2 hours, hours up to 2 days, then days. */
export function span(ms) {
  const minutes = Math.max(1, Math.round(ms / 60000));
  if (minutes < 120) return t("span_minutes", { n: minutes });
  const hours = Math.round(minutes / 60);
  if (hours < 48) return t("span_hours", { n: hours });
  return t("span_days", { n: Math.round(hours / 24) });
}

/** errorText is the sentence for an API error code (see api.js). */
export function errorText(err) {
  const code = err && err.code ? err.code : "unknown";
  switch (code) {
    case "rate_limited":
      return err.retryAfter ? t("err_rate_limited", { seconds: err.retryAfter }) : t("err_rate_limited_later");
    case "rate_limited_changes":
      return err.retryAfter ? t("err_rate_limited_changes", { seconds: err.retryAfter }) : t("err_rate_limited_changes_later");
    case "bad_json":
    case "bad_request":
    case "unsupported_media_type":
    case "too_large":
      return t("err_bad_request");
    case "insufficient_funds":
      if (err.detail) return t("err_insufficient_funds_minimum", { amount: money(err.detail.minimumBalance, err.detail.currency) });
  }
  if ("err_" + code in messages) return t("err_" + code);
  return t("err_unknown", { code });
}

/** localize fills the page's static text: data-i18n sets the text, data-i18n-label the aria-label. */
export function localize(root) {
  document.documentElement.lang = locales[lang];
  document.title = t("app_title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}

/** money formats minor units of a currency, with the currency's decimals (see currencyDigits). */
export function money(minor, currency) {
  const digits = currencyDigits(currency);
  try {
    const f = new Intl.NumberFormat(locales[lang], {
      style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits,
    });
    return f.format(minor / 10 ** digits);
  } catch {
    return (minor / 10 ** digits).toFixed(digits) + " " + currency;
  }
}

// ISO_DIGITS lists the ISO 4217 currencies whose minor unit is not 1/100,
// as the server's (driver/feedback.CurrencyDigits; a test compares them).
// Not the browser's Intl data: CLDR gives HUF, IDR, COP and IQD 0 decimals
// for display, and the ledger counts them in 1/100 (IQD 1/1000).
const ISO_DIGITS = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0, VND: 0,
  VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
};

// serverDigits: the decimals the server named for a currency
// (currency_digits of the account), which win.
const serverDigits = new Map();

/** setCurrencyDigits records the decimals the server gives a currency (the account's currency_digits). */
export function setCurrencyDigits(currency, digits) {
  if (typeof currency === "string" && Number.isInteger(digits) && digits >= 0 && digits <= 4) {
    serverDigits.set(currency, digits);
  }
}

/** currencyDigits is the currency's minor-unit decimals: the server's, else ISO 4217's (2 if unlisted). */
export function currencyDigits(currency) {
  return serverDigits.get(currency) ?? ISO_DIGITS[currency] ?? 2;
}

/**
 * amountExample is an amount as a rider types it in the currency: "20.50"
 * with 2 decimals, "20.500" with 3, "20" with none (a yen amount has no
 * ".50" to type).
 */
export function amountExample(currency) {
  const digits = currencyDigits(currency);
  return digits === 0 ? "20" : "20." + "5".padEnd(digits, "0");
}

/**
 * toMinor reads an amount typed in major units ("20", "20.50", "20,5")
 * as minor units of the currency, or null if it is not one (a negative,
 * more decimals than the currency has, anything else).
 */
export function toMinor(text, currency) {
  return notAmount(text, currency) ? null : minor(AMOUNT.exec(text), currencyDigits(currency));
}

// AMOUNT is an amount as a rider types it: digits, and decimals after a
// point or a comma.
const AMOUNT = /^(\d+)(?:[.,](\d+))?$/;

function minor(m, digits) {
  return Number(m[1]) * 10 ** digits + Number((m[2] ?? "").padEnd(digits, "0") || 0);
}

/**
 * notAmount says why text is not an amount toMinor reads: "too_large"
 * (more than 12 digits before the point), "decimals" (more than the
 * currency has), "bad" (anything else), or null when it is one.
 */
export function notAmount(text, currency) {
  const m = AMOUNT.exec(text);
  if (!m) return "bad";
  if (m[1].length > 12) return "too_large";
  if ((m[2] ?? "").length > currencyDigits(currency)) return "decimals";
  return null;
}

/** dateTime formats unix milliseconds as a short local date and time. */
export function dateTime(ms) {
  return new Intl.DateTimeFormat(dateLocale, { dateStyle: "medium", timeStyle: "short" }).format(new Date(ms));
}

/** time formats unix milliseconds as a local time with seconds. */
export function time(ms) {
  return new Intl.DateTimeFormat(dateLocale, { timeStyle: "medium" }).format(new Date(ms));
}
