//! The page's words in English and Hindi, chosen by `?lang=` or the browser's Accept-Language.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Hi,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Hi => "hi",
        }
    }

    /// `?lang=` wins; otherwise the first supported language in Accept-Language (q > 0).
    pub fn choose(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(l) = query.and_then(Self::parse) {
            return l;
        }
        let mut prefs: Vec<(f32, Lang)> = accept_language
            .unwrap_or("")
            .split(',')
            .filter_map(|part| {
                let mut it = part.trim().split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, Self::parse(tag)?))
            })
            .filter(|(q, _)| *q > 0.0)
            .collect();
        prefs.sort_by(|a, b| b.0.total_cmp(&a.0));
        prefs.first().map_or(Lang::En, |p| p.1)
    }

    fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.split('-').next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "hi" => Some(Lang::Hi),
            _ => None,
        }
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::En => &EN,
            Lang::Hi => &HI,
        }
    }
}

pub struct Strings {
    pub title: &'static str,
    pub pay: &'static str,
    pub choose_method: &'static str,
    pub scan: &'static str,
    pub open_upi: &'static str,
    pub open_wallet: &'static str,
    pub pay_exactly: &'static str,
    pub to: &'static str,
    pub copy: &'static str,
    pub copied: &'static str,
    pub upi_note: &'static str,
    pub token_warning: &'static str,
    pub network: &'static str,
    pub expires_in: &'static str,
    pub status_open: &'static str,
    pub status_processing: &'static str,
    pub status_complete: &'static str,
    pub status_expired: &'static str,
    pub status_canceled: &'static str,
    pub partially_paid: &'static str,
    pub redirecting: &'static str,
    pub back_to_merchant: &'static str,
    pub claim_heading: &'static str,
    pub claim_help: &'static str,
    pub claim_label_upi: &'static str,
    pub claim_label_token: &'static str,
    pub claim_submit: &'static str,
    pub sender_heading: &'static str,
    pub sender_help: &'static str,
    pub sender_label: &'static str,
    pub sender_submit: &'static str,
    pub test_banner: &'static str,
    pub simulate: &'static str,
    pub no_js_refresh: &'static str,
    pub qr_alt: &'static str,
}

pub static EN: Strings = Strings {
    title: "Pay",
    pay: "Pay",
    choose_method: "Choose how to pay",
    scan: "Scan with your phone, or tap the button on this phone.",
    open_upi: "Open in UPI app",
    open_wallet: "Open in wallet",
    pay_exactly: "Pay exactly",
    to: "To",
    copy: "Copy",
    copied: "Copied",
    upi_note: "Pay this exact amount, paise included: it is how your payment is recognised.",
    token_warning: "Send only this token on this network, and exactly this amount. A different network or amount may not be recognised.",
    network: "Network",
    expires_in: "Time left",
    status_open: "Waiting for your payment",
    status_processing: "Payment seen, waiting for confirmations",
    status_complete: "Payment received. Thank you!",
    status_expired: "This payment request has expired.",
    status_canceled: "This payment request was canceled.",
    partially_paid: "Part of the amount has arrived; please pay the rest.",
    redirecting: "Taking you back to the shop…",
    back_to_merchant: "Return to the shop",
    claim_heading: "Paid but not recognised?",
    claim_help: "Enter the reference of your payment. It is checked against the bank or the chain, never taken on trust.",
    claim_label_upi: "UPI reference (12-digit UTR)",
    claim_label_token: "Transaction hash",
    claim_submit: "Submit reference",
    sender_heading: "Paying from an exchange or another wallet?",
    sender_help: "Before you pay, enter the address the money will come from. If fees make the amount differ, only a transfer from this address can be matched to you by its hash.",
    sender_label: "Address you pay from",
    sender_submit: "Save address",
    test_banner: "Test mode: no real money moves.",
    simulate: "Simulate payment",
    no_js_refresh: "This page refreshes itself every 10 seconds.",
    qr_alt: "QR code to pay",
};

pub static HI: Strings = Strings {
    title: "भुगतान",
    pay: "भुगतान करें",
    choose_method: "भुगतान का तरीका चुनें",
    scan: "अपने फ़ोन से स्कैन करें, या इसी फ़ोन पर बटन दबाएँ।",
    open_upi: "UPI ऐप में खोलें",
    open_wallet: "वॉलेट में खोलें",
    pay_exactly: "ठीक इतनी राशि दें",
    to: "किसे",
    copy: "कॉपी करें",
    copied: "कॉपी हो गया",
    upi_note: "पैसे समेत ठीक यही राशि दें: इसी से आपका भुगतान पहचाना जाता है।",
    token_warning: "केवल यही टोकन, इसी नेटवर्क पर, और ठीक यही राशि भेजें। दूसरा नेटवर्क या राशि पहचानी नहीं जा सकती।",
    network: "नेटवर्क",
    expires_in: "बचा समय",
    status_open: "आपके भुगतान की प्रतीक्षा है",
    status_processing: "भुगतान दिखा, पुष्टि की प्रतीक्षा है",
    status_complete: "भुगतान मिल गया। धन्यवाद!",
    status_expired: "यह भुगतान अनुरोध समाप्त हो गया है।",
    status_canceled: "यह भुगतान अनुरोध रद्द कर दिया गया।",
    partially_paid: "राशि का कुछ हिस्सा मिला है; कृपया बाकी भुगतान करें।",
    redirecting: "आपको दुकान पर वापस ले जा रहे हैं…",
    back_to_merchant: "दुकान पर लौटें",
    claim_heading: "भुगतान किया पर पहचाना नहीं गया?",
    claim_help: "अपने भुगतान का संदर्भ दर्ज करें। इसे बैंक या चेन से जाँचा जाता है, केवल भरोसे पर नहीं माना जाता।",
    claim_label_upi: "UPI संदर्भ (12 अंकों का UTR)",
    claim_label_token: "ट्रांज़ैक्शन हैश",
    claim_submit: "संदर्भ भेजें",
    sender_heading: "किसी एक्सचेंज या दूसरे वॉलेट से भुगतान कर रहे हैं?",
    sender_help: "भुगतान से पहले वह पता दर्ज करें जहाँ से पैसा आएगा। शुल्क के कारण राशि अलग हो, तो केवल इसी पते से आया ट्रांसफ़र उसके हैश से आपसे जोड़ा जा सकता है।",
    sender_label: "जिस पते से आप भुगतान करेंगे",
    sender_submit: "पता सहेजें",
    test_banner: "टेस्ट मोड: कोई असली पैसा नहीं जाता।",
    simulate: "भुगतान का अनुकरण करें",
    no_js_refresh: "यह पेज हर 10 सेकंड में अपने आप ताज़ा होता है।",
    qr_alt: "भुगतान के लिए QR कोड",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_language() {
        assert_eq!(
            Lang::choose(None, Some("hi-IN,hi;q=0.9,en;q=0.8")),
            Lang::Hi
        );
        assert_eq!(
            Lang::choose(None, Some("en-US,en;q=0.9,hi;q=0.8")),
            Lang::En
        );
        assert_eq!(Lang::choose(None, Some("fr-FR,hi;q=0.5")), Lang::Hi);
        assert_eq!(Lang::choose(None, Some("fr-FR")), Lang::En);
        assert_eq!(Lang::choose(Some("en"), Some("hi")), Lang::En);
        assert_eq!(Lang::choose(Some("xx"), Some("hi")), Lang::Hi);
        assert_eq!(Lang::choose(None, Some("hi;q=0")), Lang::En);
    }
}
